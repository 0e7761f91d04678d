"""Statements and commits per request, over a complete login (password + TOTP), the code
exchange and UserInfo.

Runs the IdP in-process over real HTTP and counts, for every request, the statements sent
on each engine (the request's and the state engine: sessions and throttle counters) and the
commits. SQLite by default, PostgreSQL + Redis with IDP_BENCH_DATABASE_URL and
IDP_BENCH_REDIS_URL.

    python bench/counts.py [--json FILE] [--rounds 3] [--show-statements]
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import has_request_context, request  # noqa: E402
from sqlalchemy import event  # noqa: E402

from idp.demo import seed  # noqa: E402
from tests.support.idp_server import LiveServer, TestDatabase, build_app, real_now_clock  # noqa: E402
from tests.support.oidc import RelyingParty, UserAgent, totp_now  # noqa: E402


class Counter:
    """Per request (method + path): statements and commits, on every engine of the app."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.statements: dict[str, list[str]] = collections.defaultdict(list)

    def key(self) -> str | None:
        if not has_request_context():
            return None
        return f"{request.method} {request.path}"

    def attach(self, engine) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def statement(_conn, _cursor, text, _params, _context, _many):
            key = self.key()
            if key is not None and not text.lstrip().upper().startswith(("PRAGMA", "SAVEPOINT")):
                with self.lock:
                    self.current[key]["statements"] += 1
                    self.statements[key].append(" ".join(text.split())[:160])

        @event.listens_for(engine, "commit")
        def commit(_conn):
            key = self.key()
            if key is not None:
                with self.lock:
                    self.current[key]["commits"] += 1

    def take(self) -> dict[str, collections.Counter]:
        with self.lock:
            taken, self.current = self.current, collections.defaultdict(collections.Counter)
            self.statements.clear()
        return taken


def login_steps(server_url: str, demo: dict, clock, counter: Counter, show: bool) -> list[dict]:
    """One login, request by request: what each request cost."""
    rp = RelyingParty(
        server_url, demo["client_id"], demo["client_secret"], "http://localhost:9999/callback"
    )
    agent = UserAgent(server_url)
    steps: list[dict] = []

    def record(label: str) -> None:
        taken = counter.take() if not show else None
        if show:
            with counter.lock:
                statements = dict(counter.statements)
            taken = counter.take()
            for key, lines in statements.items():
                print(f"--- {label}: {key}")
                for line in lines:
                    print("   ", line)
        for key, values in taken.items():
            steps.append(
                {
                    "step": label,
                    "request": key,
                    "statements": values["statements"],
                    "commits": values["commits"],
                }
            )

    counter.take()
    page = agent.get(rp.authorization_url())
    record("authorize → login page")
    page = agent.post(
        "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
    )
    record("password → second step")
    callback = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    assert callback.headers.get("Location", "").startswith(
        "http://localhost:9999/callback?code="
    ), callback.text[:2000]
    record("TOTP → code")
    token = rp.exchange(callback.headers["Location"])
    record("code exchange")
    response = agent.http.get(
        f"{server_url}/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"}
    )
    assert response.status_code == 200
    record("userinfo")
    return steps


def measure(rounds: int, show: bool) -> dict:
    tmp = Path(tempfile.mkdtemp())
    if os.environ.get("IDP_BENCH_DATABASE_URL"):
        os.environ["IDP_TEST_DATABASE_URL"] = os.environ["IDP_BENCH_DATABASE_URL"]
    database = TestDatabase(tmp)
    clock = real_now_clock()
    overrides = {}
    if os.environ.get("IDP_BENCH_REDIS_URL"):
        overrides["redis_url"] = os.environ["IDP_BENCH_REDIS_URL"]
    app = build_app(database.fresh_url(tmp), tmp, clock, **overrides)
    counter = Counter()
    for name in ("idp.engine", "idp.state_engine"):
        counter.attach(app.extensions[name])
    server = LiveServer(app)
    try:
        with app.app_context():
            demo = seed(rp_url="http://localhost:9999")
        last: list[dict] = []
        for _ in range(rounds):  # the first round warms caches (keys, clients): keep the last
            clock.advance(30)
            last = login_steps(server.url, demo, clock, counter, show and _ == rounds - 1)
    finally:
        server.stop()
        app.extensions["idp.engine"].dispose()
        database.drop()
    backend = "postgresql" if database.is_postgres else "sqlite"
    if overrides:
        backend += "+redis"
    login = [s for s in last if s["step"] not in ("code exchange", "userinfo")]
    return {
        "backend": backend,
        "requests": last,
        "login_total": {
            "requests": len(login),
            "statements": sum(s["statements"] for s in login),
            "commits": sum(s["commits"] for s in login),
        },
    }


def markdown(result: dict) -> str:
    lines = [
        f"Statements and commits per request ({result['backend']}, warm caches)",
        "",
        "| step | request | statements | commits |",
        "|---|---|---:|---:|",
    ]
    for s in result["requests"]:
        lines.append(f"| {s['step']} | `{s['request']}` | {s['statements']} | {s['commits']} |")
    total = result["login_total"]
    lines.append(
        f"| **login total** | {total['requests']} requests | **{total['statements']}** "
        f"| **{total['commits']}** |"
    )
    return "\n".join(lines)


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--show-statements", action="store_true")
    args = parser.parse_args()
    result = measure(args.rounds, args.show_statements)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
