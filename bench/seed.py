"""Seeds a benchmarked IdP through its own services, in a process of its own with the app
context (``idp.create_app()`` with the server's environment), then answers requests for
authorization codes on standard input (codes live ``Settings.code_ttl_seconds``, 60 s, so
they are made just before each exchange run).

    python bench/seed.py --logins 300 --passkeys 60     # environment: the server's IDP_*

Prints one JSON line (client, practitioners with their TOTP seeds, passkeys with their
private keys), then for every line ``codes N`` read, one JSON line: N fresh codes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference import s256  # noqa: E402  (bench/ is the script's own folder)

REDIRECT_URI = "http://localhost:9999/callback"
SCOPE = "openid profile email rpps"
PASSWORD = "Bench-password-long-enough-1"


def seed_all(db, *, logins: int, passkeys: int) -> dict:
    from cryptography.hazmat.primitives import serialization

    from idp.demo import seed
    from idp.models import WebAuthnCredential
    from idp.oauth.clients import register_client
    from idp.services import cipher, clock
    from tests.support import factories
    from tests.support.webauthn_crafting import TEST_AAGUID, SoftAuthenticator

    demo = seed(rp_url="http://localhost:9999")
    client, secret = register_client(
        db,
        name="Benchmark",
        redirect_uris=[REDIRECT_URI],
        id_token_alg="ES256",
        require_consent=False,
    )
    db.commit()
    totp = []
    for _ in range(logins):
        person = factories.practitioner(db, clock(), password=PASSWORD)
        _device, seed_secret = factories.totp_device(db, clock(), person, cipher=cipher())
        totp.append({"username": person.rpps, "totp_secret": seed_secret})
    db.commit()
    keys = []
    for _ in range(passkeys):
        person = factories.practitioner(db, clock(), password=PASSWORD)
        authn = SoftAuthenticator()
        person.webauthn_user_handle = authn.user_handle
        db.add(
            WebAuthnCredential(
                practitioner_id=person.id,
                credential_id=authn.credential_id,
                public_key=authn.cose_public_key,
                sign_count=0,
                aaguid=str(uuid.UUID(bytes=TEST_AAGUID)),
                transports="internal",
                backup_eligible=False,
                backup_state=False,
                hardware_bound=False,
                attestation_fmt="none",
                name="Passkey",
                created_at=clock().now(),
            )
        )
        pem = authn.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        keys.append(
            {
                "username": person.rpps,
                "credential_id": authn.credential_id.hex(),
                "user_handle": authn.user_handle.hex(),
                "private_key": pem.decode(),
            }
        )
    db.commit()
    return {
        "client_id": client.client_id,
        "client_secret": secret,
        "redirect_uri": REDIRECT_URI,
        "password": PASSWORD,
        "totp": totp,
        "passkeys": keys,
        "code_owner": demo["username"],
    }


def make_codes(db, *, client_id: str, owner_rpps: str, count: int) -> dict:
    """``count`` authorization codes as rows, as the authorization endpoint leaves them."""
    from sqlalchemy import select

    from idp.crypto import hash_token
    from idp.models import AuthorizationCode, Practitioner
    from idp.services import clock

    owner = db.execute(select(Practitioner).where(Practitioner.rpps == owner_rpps)).scalar_one()
    verifier = secrets.token_urlsafe(48)
    challenge = s256(verifier)
    now = clock().now()
    codes = [secrets.token_urlsafe(32) for _ in range(count)]
    db.add_all(
        AuthorizationCode(
            code_hash=hash_token(code),
            client_id=client_id,
            practitioner_id=owner.id,
            redirect_uri=REDIRECT_URI,
            scope=SCOPE,
            nonce=secrets.token_urlsafe(8),
            code_challenge=challenge,
            code_challenge_method="S256",
            auth_time=now - dt.timedelta(seconds=5),
            acr="substantial",
            amr="pwd otp mfa",
            issued_at=now,
        )
        for code in codes
    )
    db.commit()
    return {"verifier": verifier, "codes": codes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logins", type=int, default=300)
    parser.add_argument("--passkeys", type=int, default=60)
    args = parser.parse_args()
    from idp import create_app
    from idp.db import get_db

    app = create_app()
    with app.app_context():
        db = get_db()
        seeded = seed_all(db, logins=args.logins, passkeys=args.passkeys)
        print(json.dumps(seeded), flush=True)
        for line in sys.stdin:
            command, _space, value = line.strip().partition(" ")
            if command == "codes":
                made = make_codes(
                    db,
                    client_id=seeded["client_id"],
                    owner_rpps=seeded["code_owner"],
                    count=int(value),
                )
                print(json.dumps(made), flush=True)
            db.close()
    app.extensions["idp.engine"].dispose()


if __name__ == "__main__":
    main()
