"""Costs that do not grow: login and code-exchange figures on PostgreSQL + Redis with a small
database, then with the same database grown to millions of practitioners and a million
completed logins' worth of rows, on the same server process.

The growth is written by the database itself (``INSERT … SELECT`` over ``generate_series``,
one precomputed password hash): practitioners (RPPS numbers starting with 0, which no real
one, nor the seeded ones, has), and for each past login an authorization code
(used, older than the codes the prune keeps, as if it had not run yet), an expired access
token and an audit event. The practitioners who log in during the measure are the seeded ones
(``bench/seed.py``), so only the size of the tables changes. ``VACUUM (ANALYZE)`` follows,
as autovacuum would do soon after: done before the measure, not during it.

    python bench/growth.py [--practitioners 2000000] [--logins 1000000] [--seconds 6]
        [--json bench/results/growth.json]

Prints one JSON document: for each size, complete logins (password + TOTP) and code exchanges
per server CPU-second with their p50/p95 latencies, and the ratios large ÷ small.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from run import IDP, Seeder, Server, free_port, idp_env, loadgen, measure, pg_admin

PRACTITIONERS = """
INSERT INTO practitioners (subject, rpps, given_name, family_name, profession_code, email,
    password_hash, status, created_at, language, password_change_required)
SELECT md5('bulk' || i), '0' || lpad(i::text, 10, '0'), 'Camille', 'Martin', '10',
    'bulk.' || i || '@example.test', :hash, 'active', now() - interval '400 days', 'fr', false
FROM generate_series(1, :count) AS i
"""
CODES = """
INSERT INTO authorization_codes (code_hash, client_id, practitioner_id, redirect_uri, scope,
    nonce, code_challenge, code_challenge_method, auth_time, acr, amr, issued_at, used_at)
SELECT md5('code' || i) || md5('code-' || i), :client, p.id, :redirect,
    'openid profile email rpps', md5('nonce' || i), md5('challenge' || i), 'S256',
    now() - interval '2 hours', 'substantial', 'pwd otp mfa', now() - interval '2 hours',
    now() - interval '2 hours'
FROM generate_series(1, :count) AS i
JOIN practitioners p ON p.rpps = '0' || lpad((1 + i % :people)::text, 10, '0')
"""
TOKENS = """
INSERT INTO tokens (access_token_hash, client_id, practitioner_id, authorization_code_id, scope,
    acr, amr, auth_time, issued_at, expires_at)
SELECT md5('token' || c.id) || md5('token-' || c.id), c.client_id, c.practitioner_id, c.id,
    c.scope, c.acr, c.amr, c.auth_time, c.issued_at, c.issued_at + interval '10 minutes'
FROM authorization_codes c WHERE c.issued_at < now() - interval '1 hour'
"""
EVENTS = """
INSERT INTO audit_events (at, event, practitioner_id, client_id, ip, user_agent, details_json)
SELECT c.issued_at, 'oauth:token:issued', c.practitioner_id, c.client_id, '10.0.0.1',
    'bench', '{"scope": "openid profile email rpps"}'
FROM authorization_codes c WHERE c.issued_at < now() - interval '1 hour'
"""


def grow(database_url: str, *, client_id: str, redirect: str, people: int, logins: int) -> dict:
    import sqlalchemy

    from idp.crypto import Passwords

    engine = sqlalchemy.create_engine(
        database_url.replace("postgresql://", "postgresql+psycopg://")
    )
    hashed = Passwords(time_cost=4, memory_kib=9216, parallelism=1).hash("bulk-never-used-pw")
    started = time.monotonic()
    with engine.begin() as connection:
        run = lambda sql, **params: connection.execute(sqlalchemy.text(sql), params)  # noqa: E731
        run(PRACTITIONERS, hash=hashed, count=people)
        run(CODES, client=client_id, redirect=redirect, count=logins, people=people)
        run(TOKENS)
        run(EVENTS)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        # What autovacuum would do soon after such inserts, done now: it must not run (and
        # take CPU from the server and the load) during the measure.
        connection.execute(sqlalchemy.text("VACUUM (ANALYZE)"))
        rows = {
            table: connection.execute(sqlalchemy.text(f"SELECT count(*) FROM {table}")).scalar()
            for table in ("practitioners", "authorization_codes", "tokens", "audit_events")
        }
    engine.dispose()
    return {"rows": rows, "seconds": round(time.monotonic() - started, 1)}


def figures(server, seeder, seeded, auth, base, seconds: float) -> dict:
    out = {}
    people = seeded["totp"]
    result = measure(
        server,
        "login_totp",
        {**base, "password": seeded["password"]},
        "totp",
        people,
        duration=seconds,
        processes=4,
    )
    people[:] = result["handed"]
    out["login_totp"] = {k: result[k] for k in ("per_cpu_s", "p50_ms", "p95_ms", "ok", "errors")}
    made = seeder.codes(int(400 * seconds) + 100)
    result = measure(
        server,
        "token",
        {**base, "verifier": made["verifier"], "auth": auth},
        "once",
        made["codes"],
        duration=seconds,
    )
    out["token"] = {k: result[k] for k in ("per_cpu_s", "p50_ms", "p95_ms", "ok", "errors")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--practitioners", type=int, default=2_000_000)
    parser.add_argument("--logins", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="idp-growth-"))
    port = free_port()
    env, database = idp_env("postgres", tmp, port, 1)
    server = seeder = None
    report: dict = {"practitioners": args.practitioners, "logins": args.logins}
    try:
        subprocess.run([IDP, "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)
        seeder = Seeder(env, logins=300, passkeys=1)
        seeded = seeder.seeded
        server = Server(
            "idp growth",
            [IDP, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            port,
            env=env,
        )
        server.wait_up("/.well-known/openid-configuration")
        auth = loadgen.basic(seeded["client_id"], seeded["client_secret"])
        base = {"redirect_uri": seeded["redirect_uri"], "client_id": seeded["client_id"]}
        figures(server, seeder, seeded, auth, base, 1.0)  # warm-up
        report["small"] = figures(server, seeder, seeded, auth, base, args.seconds)
        report["growth"] = grow(
            env["IDP_DATABASE_URL"],
            client_id=seeded["client_id"],
            redirect=seeded["redirect_uri"],
            people=args.practitioners,
            logins=args.logins,
        )
        report["large"] = figures(server, seeder, seeded, auth, base, args.seconds)
        report["ratios"] = {
            endpoint: {
                key: round(report["large"][endpoint][key] / report["small"][endpoint][key], 2)
                for key in ("per_cpu_s", "p50_ms", "p95_ms")
                if report["small"][endpoint][key]
            }
            for endpoint in ("login_totp", "token")
        }
    finally:
        if server is not None:
            server.stop()
        if seeder is not None:
            seeder.close()
        if database:
            pg_admin(f'DROP DATABASE "{database}"')
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
