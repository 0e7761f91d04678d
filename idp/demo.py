"""The demo: a seeded practitioner and client, the IdP on :5000, a relying party on :5001.

Demo secrets are derived from IDP_SECRET_KEY, so ``seed-demo`` is idempotent (prints the
same values every time) without storing anything in clear, and differ per installation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time

from sqlalchemy import select

DEMO_RPPS = "10000000009"
DEMO_EMAIL = "camille.martin@demo.sante.fr"
DEMO_CLIENT_ID = "demo-rp"
DEMO_CLIENT_NAME = "Appli de démonstration"


def derived_secret(label: str, length: int = 24) -> str:
    from idp.services import settings

    digest = hmac.new(settings().secret_key.encode(), label.encode(), hashlib.sha256).hexdigest()
    return digest[:length]


def demo_rp_url() -> str:
    return os.environ.get("IDP_DEMO_RP_URL", "http://localhost:5001").rstrip("/")


def seed(*, rp_url: str | None = None) -> dict:
    from idp.accounts import service
    from idp.db import get_db
    from idp.factors.totp import method as totp_method
    from idp.models import OAuthClient, Practitioner, PractitionerStatus
    from idp.oauth import clients, keys
    from idp.services import cipher, clock, settings

    db = get_db()
    password = "Demo-" + derived_secret("demo password", 16)
    client_secret = derived_secret("demo client secret", 40)
    redirect_uri = f"{(rp_url or demo_rp_url()).rstrip('/')}/callback"
    practitioner = db.execute(
        select(Practitioner).where(Practitioner.rpps == DEMO_RPPS)
    ).scalar_one_or_none()
    if practitioner is None:
        practitioner = service.create_practitioner(
            db,
            rpps=DEMO_RPPS,
            given_name="Camille",
            family_name="Martin",
            profession_code="10",
            email=DEMO_EMAIL,
            clock=clock(),
            password=password,
        )
        practitioner.status = PractitionerStatus.ACTIVE
    devices = totp_method.active_devices(db, practitioner.id)
    if devices:
        secret = totp_method.pending_secret(devices[0], cipher())
    else:
        device, secret = totp_method.start_totp_enrolment(
            db, practitioner=practitioner, name="Demo", clock=clock(), cipher=cipher()
        )
        device.confirmed_at = clock().now()
    db.commit()
    client = db.execute(
        select(OAuthClient).where(OAuthClient.client_id == DEMO_CLIENT_ID)
    ).scalar_one_or_none()
    if client is None:
        clients.register_client(
            db,
            name=DEMO_CLIENT_NAME,
            redirect_uris=[redirect_uri],
            client_id=DEMO_CLIENT_ID,
            client_secret=client_secret,
            require_consent=False,
        )
    else:
        client.name = DEMO_CLIENT_NAME  # a demo seeded before the client had a French name
        if redirect_uri not in client.redirect_uris:
            client.redirect_uris_json = json.dumps([*client.redirect_uris, redirect_uri])
        db.commit()
    keys.ensure_keys(db, cipher=cipher(), clock=clock())
    return {
        "issuer": settings().issuer,
        "client_id": DEMO_CLIENT_ID,
        "client_secret": client_secret,
        "redirect_uri": redirect_uri,
        "username": DEMO_RPPS,
        "email": DEMO_EMAIL,
        "password": password,
        "totp_secret": secret,
    }


def banner(data: dict, rp_url: str) -> str:
    """What the terminal shows once both servers answer: where to go, how to sign in, how to
    stop. The TOTP key is given as text and as a QR code for an authenticator app."""
    import io

    import segno

    from idp.factors.totp.verify import provisioning_uri

    uri = provisioning_uri(
        secret=data["totp_secret"], account_name=data["email"], issuer_name="IdP Santé (démo)"
    )
    qr = io.StringIO()
    segno.make(uri, error="m").terminal(out=qr, compact=True)
    issuer = data["issuer"].rstrip("/")
    rule = "=" * 72
    return "\n".join(
        [
            "",
            rule,
            "=== IdP Santé: démo / demo ===",
            "La démo est prête / the demo is ready.",
            "",
            f"Application de démonstration / demo app : {rp_url}",
            f"IdP : {issuer}",
            f"Mon compte / my account : {issuer}/account",
            "",
            f"Identifiant / username (RPPS) : {data['username']}",
            f"Mot de passe / password       : {data['password']}",
            f"Clé TOTP / TOTP key           : {data['totp_secret']}",
            "Scannez ce QR code avec votre application d'authentification / scan with your app:",
            qr.getvalue().rstrip("\n"),
            "",
            "Ctrl-C pour arrêter / to stop",
            rule,
            "",
        ]
    )


def print_banner(data: dict, rp_url: str) -> None:
    print(banner(data, rp_url), flush=True)


def wait_until_up(urls: list[str], *, timeout: float = 60.0, processes=()) -> bool:
    """True once every URL answers (any HTTP status); False after *timeout* seconds or as soon
    as one of *processes* has exited."""
    import requests

    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending:
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            return False
        try:
            requests.get(pending[0], timeout=1, allow_redirects=False)
        except requests.RequestException:
            time.sleep(0.2)
        else:
            pending.pop(0)
    return True


def run_demo(*, idp_port: int, rp_port: int) -> None:
    os.environ.setdefault("IDP_ENV", "development")
    os.environ.setdefault("IDP_ISSUER", f"http://localhost:{idp_port}")
    os.environ.setdefault("IDP_DEMO_RP_URL", f"http://localhost:{rp_port}")
    from idp import create_app
    from idp.config import load_dev_keys, load_settings
    from idp.db import upgrade

    settings = load_settings()
    for name, value in load_dev_keys(settings.instance_path).items():
        os.environ.setdefault(name, value)
    upgrade(settings.database_url)
    app = create_app()
    with app.app_context():
        data = seed()
    env = {
        **os.environ,
        "DEMO_RP_CLIENT_ID": data["client_id"],
        "DEMO_RP_CLIENT_SECRET": data["client_secret"],
        "DEMO_RP_URL": os.environ["IDP_DEMO_RP_URL"],
    }
    processes = [
        subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "idp.cli", "serve", "--port", str(idp_port), "--workers", "2"],
            env=env,
        ),
        subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "idp.demo_rp", "--port", str(rp_port)], env=env
        ),
    ]
    ready = wait_until_up(
        [f"http://127.0.0.1:{idp_port}/healthz", f"http://127.0.0.1:{rp_port}/"],
        processes=processes,
    )
    if ready:
        print_banner(data, env["DEMO_RP_URL"])
    elif all(p.poll() is None for p in processes):
        print("La démo ne répond pas encore / the demo is not answering yet.", flush=True)
        print_banner(data, env["DEMO_RP_URL"])
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=10)
