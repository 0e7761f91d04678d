"""Where the time goes: a py-spy profile of complete logins and of the code exchange.

Runs the IdP in-process over real HTTP (as bench/counts.py), samples it with py-spy, and
prints the hotspots: the share of samples per area (argon2, SQLAlchemy and the driver,
Jinja, Authlib, Flask/Werkzeug, the IdP's own code) and the top functions by own time.
Samples are taken while a thread holds the GIL: argon2, which releases it, is left out (its
cost is measured apart). PostgreSQL + Redis with IDP_BENCH_DATABASE_URL and
IDP_BENCH_REDIS_URL, as bench/counts.py.

    python bench/profile.py login --rounds 60 [--json FILE]
    python bench/profile.py token --rounds 400 [--json FILE]
"""

from __future__ import annotations

import argparse
import base64
import collections
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AREAS = (
    ("argon2", ("argon2",)),
    ("sqlalchemy + driver", ("sqlalchemy", "psycopg", "sqlite3")),
    ("jinja", ("jinja2",)),
    ("authlib + joserfc + crypto", ("authlib", "joserfc", "cryptography")),
    ("flask + werkzeug", ("flask", "werkzeug", "flask_wtf", "flask_babel", "babel", "wtforms")),
    ("redis", ("redis",)),
    ("idp", ("idp/",)),
    ("http server + client (harness)", ("socketserver", "http/", "requests", "urllib3")),
)


def area_of(frame: str) -> str | None:
    for name, needles in AREAS:
        if any(f"/{needle}" in frame or f"{needle}/" in frame for needle in needles):
            return name
    return None


def target(what: str, rounds: int) -> None:
    """The profiled process: a live IdP and the requests that exercise it."""
    from idp.crypto import hash_token
    from idp.demo import seed
    from idp.models import AuthorizationCode
    from tests.support.idp_server import LiveServer, TestDatabase, build_app, real_now_clock
    from tests.support.oidc import RelyingParty, UserAgent, redeem_code, totp_now

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp())
    if os.environ.get("IDP_BENCH_DATABASE_URL"):
        os.environ["IDP_TEST_DATABASE_URL"] = os.environ["IDP_BENCH_DATABASE_URL"]
    database = TestDatabase(tmp)
    clock = real_now_clock()
    overrides = {}
    if os.environ.get("IDP_BENCH_REDIS_URL"):
        overrides["redis_url"] = os.environ["IDP_BENCH_REDIS_URL"]
    app = build_app(database.fresh_url(tmp), tmp, clock, **overrides)
    server = LiveServer(app)
    redirect = "http://localhost:9999/callback"
    try:
        with app.app_context():
            demo = seed(rp_url="http://localhost:9999")
        if what == "login":
            for _ in range(rounds):
                clock.advance(30)
                rp = RelyingParty(server.url, demo["client_id"], demo["client_secret"], redirect)
                agent = UserAgent(server.url)
                page = agent.get(rp.authorization_url())
                page = agent.post(
                    "/login",
                    {"identifier": demo["username"], "password": demo["password"]},
                    page.text,
                )
                agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
            return
        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        with app.app_context():
            from idp.db import get_db
            from idp.models import Practitioner

            db = get_db()
            practitioner = db.query(Practitioner).filter_by(rpps=demo["username"]).one()
            codes = [secrets.token_urlsafe(32) for _ in range(rounds)]
            for code in codes:
                db.add(
                    AuthorizationCode(
                        code_hash=hash_token(code),
                        client_id=demo["client_id"],
                        practitioner_id=practitioner.id,
                        redirect_uri=redirect,
                        scope="openid profile email rpps",
                        nonce=secrets.token_urlsafe(8),
                        code_challenge=challenge,
                        code_challenge_method="S256",
                        auth_time=clock.now() - dt.timedelta(seconds=5),
                        acr="substantial",
                        amr="pwd otp mfa",
                        issued_at=clock.now(),
                    )
                )
            db.commit()
        for code in codes:
            response = redeem_code(
                f"{server.url}/token",
                code,
                redirect_uri=redirect,
                verifier=verifier,
                auth=(demo["client_id"], demo["client_secret"]),
            )
            assert response.status_code == 200, response.text
    finally:
        server.stop()
        app.extensions["idp.engine"].dispose()
        database.drop()


def summarise(raw: Path, top: int) -> dict:
    """py-spy's raw (collapsed) output: one line per distinct stack and its sample count."""
    by_area: collections.Counter = collections.Counter()
    by_function: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _space, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # Only the server's threads: the harness's own requests are not the IdP's cost.
        if not any("werkzeug/serving.py" in frame for frame in frames):
            continue
        samples = int(count)
        total += samples
        leaf = frames[-1]
        # The innermost frame that belongs to a known area names the sample's area.
        area = next((a for a in map(area_of, reversed(frames)) if a), "other")
        by_area[area] += samples
        by_function[leaf.split(" (")[0] + " (" + leaf.split("/")[-1]] += samples
    return {
        "samples": total,
        "areas": {name: round(count / total, 3) for name, count in by_area.most_common()},
        "top_functions": [
            {"function": name, "share": round(count / total, 3)}
            for name, count in by_function.most_common(top)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=("login", "token"))
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--target", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rounds = args.rounds or (60 if args.what == "login" else 400)
    if args.target:
        target(args.what, rounds)
        return
    py_spy = Path(sys.executable).with_name("py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "profile.txt"
        subprocess.run(
            [
                str(py_spy),
                "record",
                "--gil",
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--",
                sys.executable,
                __file__,
                args.what,
                "--rounds",
                str(rounds),
                "--target",
            ],
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        summary = {"what": args.what, "rounds": rounds, **summarise(raw, args.top)}
    print(f"{args.what}: {summary['samples']} samples over {rounds} rounds")
    for name, share in summary["areas"].items():
        print(f"  {share:6.1%}  {name}")
    print("top functions (own time):")
    for row in summary["top_functions"]:
        print(f"  {row['share']:6.1%}  {row['function']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
