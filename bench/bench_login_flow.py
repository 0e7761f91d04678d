"""Latency of a complete login + authorization code flow, step by step.

Runs the IdP in-process over real HTTP (SQLite by default, PostgreSQL with
IDP_BENCH_DATABASE_URL) and reports p50/p95/p99 per step and each step's share of the whole.
The password step is expected to dominate: argon2id is slow on purpose.

    python bench/bench_login_flow.py --rounds 50
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from idp.demo import seed  # noqa: E402
from tests.support.idp_server import LiveServer, TestDatabase, build_app, real_now_clock  # noqa: E402
from tests.support.oidc import RelyingParty, UserAgent, totp_now  # noqa: E402

STEPS = ("authorize", "password", "totp", "token", "userinfo")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def run(rounds: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp())
    if os.environ.get("IDP_BENCH_DATABASE_URL"):
        os.environ["IDP_TEST_DATABASE_URL"] = os.environ["IDP_BENCH_DATABASE_URL"]
    database = TestDatabase(tmp)
    clock = real_now_clock()
    app = build_app(database.fresh_url(tmp), tmp, clock)
    server = LiveServer(app)
    timings: dict[str, list[float]] = {step: [] for step in STEPS}
    try:
        with app.app_context():
            demo = seed(rp_url="http://localhost:9999")
        for _ in range(rounds):
            clock.advance(30)  # a fresh TOTP step each round (steps are single-use)
            rp = RelyingParty(
                server.url,
                demo["client_id"],
                demo["client_secret"],
                "http://localhost:9999/callback",
            )
            agent = UserAgent(server.url)
            started = time.perf_counter()
            page = agent.get(rp.authorization_url())
            marks = [time.perf_counter()]
            page = agent.post(
                "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
            )
            marks.append(time.perf_counter())
            callback = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
            marks.append(time.perf_counter())
            token = rp.exchange(callback.headers["Location"])
            marks.append(time.perf_counter())
            agent.http.get(
                f"{server.url}/userinfo",
                headers={"Authorization": f"Bearer {token['access_token']}"},
            )
            marks.append(time.perf_counter())
            previous = started
            for step, mark in zip(STEPS, marks, strict=True):
                timings[step].append((mark - previous) * 1000)
                previous = mark
    finally:
        server.stop()
        app.extensions["idp.engine"].dispose()
        database.drop()
    return timings


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    timings = run(args.rounds)
    totals = [sum(values) for values in zip(*timings.values(), strict=True)]
    total_median = statistics.median(totals)
    backend = "postgresql" if os.environ.get("IDP_BENCH_DATABASE_URL") else "sqlite"
    print(f"{args.rounds} complete flows on {backend} (milliseconds)")
    print(f"{'step':<10} {'p50':>8} {'p95':>8} {'p99':>8} {'share of p50 total':>20}")
    for step, values in timings.items():
        p50 = percentile(values, 50)
        print(
            f"{step:<10} {p50:8.1f} {percentile(values, 95):8.1f} "
            f"{percentile(values, 99):8.1f} {p50 / total_median:20.0%}"
        )
    print(
        f"{'total':<10} {percentile(totals, 50):8.1f} {percentile(totals, 95):8.1f} "
        f"{percentile(totals, 99):8.1f}"
    )


if __name__ == "__main__":
    main()
