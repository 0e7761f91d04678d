"""The benchmark: this IdP against a minimal reference (bench/reference.py) and the Node.js
``oidc-provider`` peer (bench/peer/), on loopback, bounded in time and requests.

    make bench                       # or: python bench/run.py [--quick]
    python bench/run.py --backends sqlite --workers 1 --endpoints discovery,token

Every server runs pinned to CPU 0, the load generator (bench/loadgen.py) and this harness to
CPU 1. The main figure is requests per server CPU-second: successful requests divided by the
CPU time (user + system) of the server's whole process tree, master and workers, read from
/proc before and after each run. Reference and IdP run alternately, several short rounds
each, so both see the same noise; each endpoint's ratio is the median of the per-round
ratios. After the closed-loop rounds, an open-loop run at 0.8 x the peak rate gives
p50/p95/p99 from the scheduled send times. Results: bench/results/latest.json and
bench/results/README.md. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import loadgen  # noqa: E402
import reference  # noqa: E402

PYTHON = sys.executable
IDP = str(Path(sys.executable).with_name("idp"))
RESULTS = HERE / "results"
PEER = HERE / "peer"
SERVER_CPU, CLIENT_CPU = 0, 1
PG_ADMIN = os.environ.get("IDP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = "redis://127.0.0.1:6379/5"  # never db 0: the tests use it
ENDPOINTS = ("discovery", "jwks", "token", "userinfo", "login_totp", "login_passkey")
# refresh_token before client_credentials: the in-memory adapter is an LRU cache, which the
# thousands of client_credentials tokens would evict the refresh token and its grant from.
PEER_ENDPOINTS = ("discovery", "jwks", "refresh_token", "client_credentials")
BACKENDS = ("sqlite", "postgres", "peer")
TICK = os.sysconf("SC_CLK_TCK")
LOGIN_PROCESSES = 4
"""Concurrent logins: with 8, a trial run saw a few password steps answered 429 (throttled;
the cause is not investigated here), with 4 none."""
RATE_LIMITS = "login.ip=100, 2fa.ip=100, webauthn.ip=100"


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree(pid: int) -> list[int]:
    """The process and all its descendants (gunicorn's master and workers)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue.extend(int(child) for child in task.read_text().split())
            except OSError:
                pass
    return found


def cpu_of(pid: int) -> dict[int, float]:
    """utime + stime, in seconds, of every process of the tree."""
    times = {}
    for member in tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        times[member] = (int(fields[11]) + int(fields[12])) / TICK
    return times


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def rss_of(pid: int) -> dict[str, float]:
    """Resident memory (MiB) of the master and of each worker after the load, and the peak
    each reached during it (the kernel's high-water mark, ``VmHWM``)."""
    sizes = {}
    for member in tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        name = "master" if member == pid else f"worker {member}"
        sizes[name] = round(int(fields["VmRSS"].split()[0]) / 1024, 1)
        sizes[f"{name} peak"] = round(int(fields["VmHWM"].split()[0]) / 1024, 1)
    return sizes


class Server:
    def __init__(self, label: str, command: list[str], port: int, env=None, cwd=None) -> None:
        self.label, self.port = label, port
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CPU), *command],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE if label == "peer" else self.log,
            stderr=self.log,
        )
        self.pid = self.process.pid  # taskset execs the command: same pid

    def wait_up(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"{self.label} exited: {self.log.read()[-2000:].decode()}")
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{self.port}{path}", headers={"Host": self.host}
                )
                with urllib.request.urlopen(request, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.label} did not answer on port {self.port}")

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --------------------------------------------------------------------------- measuring


def measure(
    server: Server,
    scenario: str,
    ctx: dict,
    kind: str,
    items: list,
    *,
    duration,
    rate=None,
    processes=8,
) -> dict:
    """One run; in open loop when ``open_loop`` has set a rate."""
    rate = rate or OPEN_RATE.get("rate")
    marks = {}
    result = loadgen.run(
        port=server.port,
        host_header=server.host,
        scenario=scenario,
        ctx=ctx,
        kind=kind,
        items=items,
        processes=processes,
        duration=duration,
        rate=rate,
        on_start=lambda: marks.setdefault("before", cpu_of(server.pid)),
    )
    cpu = cpu_spent(marks["before"], cpu_of(server.pid))
    result["server_cpu_s"] = round(cpu, 3)
    result["per_cpu_s"] = round(result["ok"] / cpu, 1) if cpu > 0 else None
    return result


def summary(rounds: list[dict]) -> dict:
    keys = ("per_cpu_s", "per_s", "p50_ms", "p95_ms", "p99_ms")
    out = {key: median([r[key] for r in rounds]) for key in keys}
    out["ok"] = sum(r["ok"] for r in rounds)
    out["errors"] = sum(r["errors"] for r in rounds)
    out["http_requests"] = sum(r["http_requests"] for r in rounds)
    out["server_cpu_s"] = round(sum(r["server_cpu_s"] for r in rounds), 3)
    out["client_cpu_share"] = round(
        sum(r["client_cpu_s"] for r in rounds) / max(1e-9, sum(r["elapsed_s"] for r in rounds)), 2
    )
    return out


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 2) if values else None


def strip(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "handed"}


# --------------------------------------------------------------------------- the IdP


def idp_env(backend: str, tmp: Path, port: int, workers: int) -> tuple[dict, str | None]:
    env = {
        **os.environ,
        "IDP_ENV": "production",
        "IDP_SECRET_KEY": secrets.token_hex(32),
        "IDP_DATA_KEY": secrets.token_hex(32),
        "IDP_ISSUER": f"http://localhost:{port}",
        "IDP_INSTANCE_PATH": str(tmp),
        "IDP_WORKERS": str(workers),
        "PYTHONPATH": str(ROOT),
        # All the load comes from 127.0.0.1 (as a hospital behind one NAT address): the
        # per-address limiters get their highest free allowance.
        "IDP_RATE_LIMITS": RATE_LIMITS,
    }
    database = None
    if backend == "sqlite":
        env["IDP_DATABASE_URL"] = f"sqlite:///{tmp / 'idp.sqlite3'}"
        env.pop("IDP_REDIS_URL", None)
    else:
        database = f"idp_bench_{secrets.token_hex(5)}"
        pg_admin(f'CREATE DATABASE "{database}"')
        env["IDP_DATABASE_URL"] = PG_ADMIN.rsplit("/", 1)[0] + f"/{database}"
        env["IDP_REDIS_URL"] = REDIS_URL
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
    return env, database


def pg_admin(statement: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(
        PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(statement))
    engine.dispose()


class Seeder:
    """bench/seed.py, kept running: the seed, then fresh codes on demand."""

    def __init__(self, env: dict, logins: int, passkeys: int) -> None:
        self.process = subprocess.Popen(
            [PYTHON, str(HERE / "seed.py"), "--logins", str(logins), "--passkeys", str(passkeys)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.seeded = json.loads(self.process.stdout.readline())

    def codes(self, count: int) -> dict:
        self.process.stdin.write(f"codes {count}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def alternate(plan: dict, rounds: int, duration: float, log) -> dict:
    """``plan``: label → function(duration) returning a round's result; run in turn."""
    results = {label: [] for label in plan}
    for number in range(rounds):
        for label, once in plan.items():
            results[label].append(once(duration))
            last = results[label][-1]
            log(
                f"    round {number + 1} {label}: {last['per_cpu_s']} /CPU-s, {last['per_s']} /s,"
                f" errors {last['errors']}"
            )
    return results


def bench_idp(args, backend: str, workers: int, ref: Server | None, ref_state: dict, log) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="idp-bench-"))
    port = free_port()
    env, database = idp_env(backend, tmp, port, workers)
    server = seeder = None
    out: dict = {"backend": backend, "workers": workers, "threads": 4, "endpoints": {}}
    try:
        subprocess.run([IDP, "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)
        seeder = Seeder(env, logins=args.logins, passkeys=16)
        seeded = seeder.seeded
        server = Server(
            f"idp {backend} x{workers}",
            [
                IDP,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--threads",
                "4",
            ],
            port,
            env=env,
        )
        server.wait_up("/.well-known/openid-configuration")
        auth = loadgen.basic(seeded["client_id"], seeded["client_secret"])
        ref_auth = loadgen.basic(reference.CLIENT_ID, reference.CLIENT_SECRET)
        base_ctx = {"redirect_uri": seeded["redirect_uri"], "client_id": seeded["client_id"]}
        tokens: list[str] = []
        estimate = {"idp": 300.0, "ref": 1500.0}

        def idp_codes(duration: float) -> tuple[dict, list]:
            made = seeder.codes(int(estimate["idp"] * duration * 1.5) + 100)
            return {**base_ctx, "verifier": made["verifier"], "auth": auth}, made["codes"]

        def ref_codes(duration: float) -> tuple[dict, list]:
            count = int(estimate["ref"] * duration * 1.5) + 100
            start = ref_state["next_code"]
            ref_state["next_code"] += count
            ctx = {
                "redirect_uri": reference.REDIRECT_URI,
                "verifier": reference.VERIFIER,
                "auth": ref_auth,
            }
            return ctx, [reference.code_of(i) for i in range(start, start + count)]

        # Warm-up, unmeasured: templates, keys, pools, and the access tokens for UserInfo.
        ctx, codes = idp_codes(0.2)
        warm = loadgen.run(
            port=port,
            host_header=server.host,
            scenario="token",
            ctx=ctx,
            kind="once",
            items=codes[:40],
            processes=2,
            duration=2,
        )
        tokens.extend(warm["handed"])
        for path in ("/.well-known/openid-configuration", "/jwks.json"):
            loadgen.run(
                port=port,
                host_header=server.host,
                scenario="get",
                ctx={"path": path},
                kind="cycle",
                items=[None],
                processes=2,
                duration=0.3,
            )

        def endpoint_plan(endpoint: str) -> dict:
            plan = {}
            if endpoint in ("discovery", "jwks"):
                path = (
                    "/.well-known/openid-configuration" if endpoint == "discovery" else "/jwks.json"
                )
                plan["idp"] = lambda d: measure(
                    server, "get", {"path": path}, "cycle", [None], duration=d
                )
                if ref:
                    plan["ref"] = lambda d: measure(
                        ref, "get", {"path": path}, "cycle", [None], duration=d
                    )
            elif endpoint == "token":

                def idp_token(d):
                    ctx, codes = idp_codes(d)
                    result = measure(server, "token", ctx, "once", codes, duration=d)
                    tokens.extend(result["handed"])
                    estimate["idp"] = max(50.0, result["per_s"] or 0)
                    return result

                def ref_token(d):
                    ctx, codes = ref_codes(d)
                    result = measure(ref, "token", ctx, "once", codes, duration=d)
                    estimate["ref"] = max(100.0, result["per_s"] or 0)
                    return result

                plan["idp"] = idp_token
                if ref:
                    plan["ref"] = ref_token
            elif endpoint == "userinfo":
                plan["idp"] = lambda d: measure(
                    server, "userinfo", {}, "cycle", tokens[:100], duration=d
                )
                if ref:
                    ref_tokens = [reference.token_of(i) for i in range(100)]
                    plan["ref"] = lambda d: measure(
                        ref, "userinfo", {}, "cycle", ref_tokens, duration=d
                    )
            elif endpoint == "login_totp":
                people = seeded["totp"]
                ctx = {**base_ctx, "password": seeded["password"]}

                def totp_round(d):
                    result = measure(
                        server,
                        "login_totp",
                        ctx,
                        "totp",
                        people,
                        duration=d,
                        processes=LOGIN_PROCESSES,
                    )
                    people[:] = result["handed"]  # their last TOTP steps
                    return result

                plan["idp"] = totp_round
            elif endpoint == "login_passkey":
                keys = seeded["passkeys"]  # their sign counts kept from run to run
                for key in keys:
                    key.setdefault("sign_count", 0)
                ctx = {**base_ctx, "origin": f"http://localhost:{port}"}

                def passkey_round(d):
                    result = measure(
                        server, "login_passkey", ctx, "passkey_state", keys, duration=d
                    )
                    keys[:] = result["handed"]
                    return result

                plan["idp"] = passkey_round
            return plan

        for endpoint in args.endpoints:
            log(f"  {backend} x{workers} {endpoint}")
            plan = endpoint_plan(endpoint)
            rounds = alternate(plan, args.rounds, args.duration, log)
            entry = {
                "idp": summary(rounds["idp"]),
                "rounds": {k: [strip(r) for r in v] for k, v in rounds.items()},
            }
            if "ref" in rounds:
                entry["reference"] = summary(rounds["ref"])
                ratios = [
                    i["per_cpu_s"] / r["per_cpu_s"]
                    for i, r in zip(rounds["idp"], rounds["ref"], strict=True)
                    if i["per_cpu_s"] and r["per_cpu_s"]
                ]
                entry["ratio_to_reference"] = (
                    round(statistics.median(ratios), 3) if ratios else None
                )
                entry["ratios"] = [round(x, 3) for x in ratios]
            # Open loop at 0.8 x the peak: a fresh plan, the rate fixed.
            peak = entry["idp"]["per_s"] or 0
            if peak:
                entry["open_loop_80"] = open_loop(
                    endpoint_plan(endpoint), "idp", peak * 0.8, args.open_duration
                )
                if "reference" in entry and entry["reference"]["per_s"]:
                    entry["reference_open_loop_80"] = open_loop(
                        endpoint_plan(endpoint),
                        "ref",
                        entry["reference"]["per_s"] * 0.8,
                        args.open_duration,
                    )
            out["endpoints"][endpoint] = entry
        out["rss_mib"] = rss_of(server.pid)
        if endpoint_units := out["endpoints"].get("login_totp"):
            idp = endpoint_units["idp"]
            out["http_requests_per_totp_login"] = round(
                idp["http_requests"] / max(1, idp["ok"] + idp["errors"]), 2
            )
            out["password_check_ms"] = password_check_ms()
    finally:
        if server:
            server.stop()
        if seeder:
            seeder.close()
        if database:
            pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)
    return out


OPEN_RATE: dict = {}


def open_loop(plan: dict, label: str, rate: float, duration: float) -> dict:
    """The plan's runner for ``label`` with a fixed send rate (the loadgen's ``rate``)."""
    OPEN_RATE["rate"] = rate
    try:
        result = plan[label](duration)
    finally:
        OPEN_RATE.clear()
    keys = ("ok", "errors", "error_statuses", "per_s", "p50_ms", "p95_ms", "p99_ms", "per_cpu_s")
    return {"rate_per_s": round(rate, 1), **{k: result[k] for k in keys}}


# --------------------------------------------------------------------------- the peer


def bench_peer(args, log) -> dict:
    if not (PEER / "node_modules").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEER, check=True
        )
    port = free_port()
    client_id, secret = "bench", secrets.token_urlsafe(24)
    env = {**os.environ, "PORT": str(port), "CLIENT_ID": client_id, "CLIENT_SECRET": secret}
    server = Server("peer", ["node", "server.js"], port, env=env, cwd=PEER)
    out: dict = {
        "oidc_provider": json.loads((PEER / "package.json").read_text())["dependencies"][
            "oidc-provider"
        ],
        "endpoints": {},
    }
    try:
        line = ""
        while not line.startswith("{"):
            line = server.process.stdout.readline().decode()
            if not line:
                raise RuntimeError("the peer exited")
        refresh = json.loads(line)["refresh_token"]  # not rotated: it serves every request
        auth = loadgen.basic(client_id, secret)
        scenarios = {
            "discovery": ("get", {"path": "/.well-known/openid-configuration"}),
            "jwks": ("get", {"path": "/jwks"}),
            "client_credentials": (
                "peer_token",
                {"auth": auth, "form": {"grant_type": "client_credentials", "scope": "api"}},
            ),
            "refresh_token": (
                "peer_token",
                {"auth": auth, "form": {"grant_type": "refresh_token", "refresh_token": refresh}},
            ),
        }
        for endpoint in args.peer_endpoints:
            scenario, ctx = scenarios[endpoint]
            log(f"  peer {endpoint}")

            def once(d, scenario=scenario, ctx=ctx):
                return measure(server, scenario, ctx, "cycle", [None], duration=d)

            once(0.3)  # warm-up
            rounds = alternate({"peer": once}, args.rounds, args.duration, log)
            entry = {"peer": summary(rounds["peer"]), "rounds": [strip(r) for r in rounds["peer"]]}
            if entry["peer"]["per_s"]:
                entry["open_loop_80"] = open_loop(
                    {"peer": once}, "peer", entry["peer"]["per_s"] * 0.8, args.open_duration
                )
            out["endpoints"][endpoint] = entry
        out["rss_mib"] = rss_of(server.pid)
    finally:
        server.stop()
    return out


# --------------------------------------------------------------------------- optional sections


def optional(command: list[str], env: dict, timeout: float, log) -> dict:
    """bench/counts.py or bench/profile.py with --json, bounded in time."""
    with tempfile.NamedTemporaryFile(suffix=".json") as target:
        try:
            done = subprocess.run(
                [*command, "--json", target.name],
                env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                timeout=timeout,
                capture_output=True,
                text=True,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        if done.returncode != 0:
            return {"error": done.stderr[-1500:]}
        text = Path(target.name).read_text()
        return json.loads(text) if text else {"error": "no output"}


def sections(args, log) -> dict:
    out = {}
    pg = {"IDP_BENCH_DATABASE_URL": PG_ADMIN, "IDP_BENCH_REDIS_URL": REDIS_URL}
    if "counts" in args.sections:
        log("  counts (sqlite, postgres)")
        out["counts"] = {
            "sqlite": optional([PYTHON, str(HERE / "counts.py"), "--rounds", "1"], {}, 180, log),
            "postgres": optional([PYTHON, str(HERE / "counts.py"), "--rounds", "1"], pg, 180, log),
        }
    if "profile" in args.sections:
        log("  profile (sqlite)")
        rounds = {"login": 15 if args.quick else 40, "token": 150 if args.quick else 400}
        out["profile"] = {
            what: optional(
                [PYTHON, str(HERE / "profile.py"), what, "--rounds", str(n)], {}, 300, log
            )
            for what, n in rounds.items()
        }
    return out


# --------------------------------------------------------------------------- output


PASSWORD_CHECK = """
import statistics, time
from idp.config import Settings
from idp.crypto import Passwords
passwords = Passwords(time_cost=Settings.argon2_time_cost, memory_kib=Settings.argon2_memory_kib,
                      parallelism=Settings.argon2_parallelism)
stored = passwords.hash("correct horse battery")
spent = []
for _ in range(15):
    start = time.process_time()
    passwords.verify(stored, "correct horse battery")
    spent.append(time.process_time() - start)
print(statistics.median(spent) * 1000)
"""


def password_check_ms() -> float:
    """CPU milliseconds of one password check at the IdP's default argon2 parameters, on the
    servers' core, now: what a complete login costs at the least, whatever else it does."""
    done = subprocess.run(
        ["taskset", "-c", str(SERVER_CPU), PYTHON, "-c", PASSWORD_CHECK],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return round(float(done.stdout.split()[-1]), 2)


def machine() -> dict:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "node": node,
        "kernel": platform.release(),
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
    }


def fmt(value, unit: str = "") -> str:
    return "–" if value is None else f"{value:g}{unit}"


def markdown(data: dict) -> str:
    cfg = data["config"]
    lines = [
        "# Benchmark results",
        "",
        f"Run {data['started']} → {data['finished']} UTC, `{' '.join(cfg['argv'])}`.",
        "",
        (
            "**A quick run on a shared 2-core machine**: few, short rounds; read the figures as "
            "orders of magnitude, "
            "the ratios (measured in the same rounds) are the steadier part."
            if cfg["quick"]
            else "A run on a shared 2-core machine: absolute times mean little; the ratios are "
            "measured in the same rounds."
        ),
        "",
        f"Machine: {data['machine']['cpu_model']}, nproc {data['machine']['nproc']}, Python "
        f"{data['machine']['python']}, "
        f"Node {data['machine']['node']}. Servers pinned to CPU {SERVER_CPU}, load generator to "
        f"CPU {CLIENT_CPU} "
        f"({cfg['processes']} keep-alive connections, closed loop, {cfg['rounds']} rounds × "
        f"{cfg['duration_s']} s "
        f"alternating IdP and reference; open loop at 0.8 × peak for {cfg['open_duration_s']} s).",
        "",
        "**req/CPU-s** = successful requests (or complete logins) per CPU-second of the "
        "server's whole process tree "
        "(master + workers; PostgreSQL and Redis, outside the tree, are not counted). **ratio** "
        "= IdP ÷ reference, "
        "median of the per-round ratios. Latencies in ms; p50/p95/p99 under closed loop (8 "
        "connections, so queueing "
        "included), p99@80% from the open-loop run's scheduled send times.",
        "",
    ]
    for run in data["idp"]:
        lines += [
            f"## IdP, {run['backend']}, {run['workers']} worker(s) × {run['threads']} threads",
            "",
            "| endpoint | req/CPU-s | ref req/CPU-s | ratio | req/s | p50 | p95 | p99 | p99@80% "
            "| errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for endpoint, entry in run["endpoints"].items():
            idp = entry["idp"]
            ref = entry.get("reference", {})
            open80 = entry.get("open_loop_80", {})
            lines.append(
                f"| {endpoint} | {fmt(idp['per_cpu_s'])} | {fmt(ref.get('per_cpu_s'))} | "
                f"{fmt(entry.get('ratio_to_reference'))} "
                f"| {fmt(idp['per_s'])} | {fmt(idp['p50_ms'])} | {fmt(idp['p95_ms'])} | "
                f"{fmt(idp['p99_ms'])} "
                f"| {fmt(open80.get('p99_ms'))} | {idp['errors'] + open80.get('errors', 0)} |"
            )
        lines += [
            "",
            "RSS after load, and peak (MiB): "
            f"{', '.join(f'{k} {v}' for k, v in run['rss_mib'].items())}.",
        ]
        if "http_requests_per_totp_login" in run:
            lines.append(
                f"HTTP requests per password + TOTP login: {run['http_requests_per_totp_login']}."
            )
        if run.get("password_check_ms") and run["endpoints"]["login_totp"]["idp"]["per_cpu_s"]:
            check = run["password_check_ms"]
            login = 1000 / run["endpoints"]["login_totp"]["idp"]["per_cpu_s"]
            lines.append(
                f"One password check at the default argon2 parameters, measured on the same "
                f"core after this configuration's rounds: {check} ms of CPU, so at most "
                f"{1000 / check:.1f} logins per core-second with nothing else done; a login "
                f"cost {login:.1f} ms, {login - check:.1f} ms beyond its password check."
            )
        lines.append("")
    refs = [r for r in data.get("reference", [])]
    for ref in refs:
        lines += [
            f"Reference ({ref['workers']} worker(s)) RSS after load (MiB): "
            f"{', '.join(f'{k} {v}' for k, v in ref['rss_mib'].items())}.",
            "",
        ]
    if data.get("reference_detail"):
        lines += [
            "## Reference, same rounds",
            "",
            "| config | endpoint | req/CPU-s | req/s | p50 | p95 | p99 | p99@80% |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in data["reference_detail"]:
            lines.append(
                f"| {row['config']} | {row['endpoint']} | {fmt(row['per_cpu_s'])} | "
                f"{fmt(row['per_s'])} | {fmt(row['p50_ms'])} "
                f"| {fmt(row['p95_ms'])} | {fmt(row['p99_ms'])} | {fmt(row.get('p99_80_ms'))} |"
            )
        lines.append("")
    if data.get("peer"):
        peer = data["peer"]
        lines += [
            f"## Node.js peer: oidc-provider {peer['oidc_provider']}, one process, in-memory "
            f"adapter",
            "",
            "| endpoint | req/CPU-s | req/s | p50 | p95 | p99 | p99@80% | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for endpoint, entry in peer["endpoints"].items():
            p = entry["peer"]
            open80 = entry.get("open_loop_80", {})
            lines.append(
                f"| {endpoint} | {fmt(p['per_cpu_s'])} | {fmt(p['per_s'])} | {fmt(p['p50_ms'])} "
                f"| {fmt(p['p95_ms'])} "
                f"| {fmt(p['p99_ms'])} | {fmt(open80.get('p99_ms'))} | "
                f"{p['errors'] + open80.get('errors', 0)} |"
            )
        lines += [
            "",
            f"RSS after load (MiB): {', '.join(f'{k} {v}' for k, v in peer['rss_mib'].items())}.",
            "",
        ]
    for name, section in data.get("sections", {}).items():
        lines += [f"## {name}", "", "```json", json.dumps(section, indent=1)[:6000], "```", ""]
    return "\n".join(lines) + "\n"


def reference_detail(data: dict) -> list[dict]:
    rows = []
    for run in data["idp"]:
        for endpoint, entry in run["endpoints"].items():
            if "reference" in entry:
                ref = entry["reference"]
                rows.append(
                    {
                        "config": f"{run['workers']} worker(s), beside {run['backend']}",
                        "endpoint": endpoint,
                        **{k: ref[k] for k in ("per_cpu_s", "per_s", "p50_ms", "p95_ms", "p99_ms")},
                        "p99_80_ms": entry.get("reference_open_loop_80", {}).get("p99_ms"),
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="about 1-2 minutes (fewer, shorter rounds)"
    )
    parser.add_argument(
        "--backends", default="sqlite,postgres,peer", help=f"of {','.join(BACKENDS)}"
    )
    parser.add_argument("--workers", default="1,2", help="IdP (and reference) worker counts")
    parser.add_argument(
        "--endpoints", default=",".join(ENDPOINTS), help=f"of {','.join(ENDPOINTS)}"
    )
    parser.add_argument("--peer-endpoints", default=",".join(PEER_ENDPOINTS))
    parser.add_argument(
        "--sections", default="counts,profile", help="optional sections: counts,profile (or none)"
    )
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=float, help="seconds of each closed-loop round")
    parser.add_argument("--open-duration", type=float, help="seconds of each open-loop run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.backends = [b for b in args.backends.split(",") if b]
    args.endpoints = [e for e in args.endpoints.split(",") if e]
    args.peer_endpoints = [e for e in args.peer_endpoints.split(",") if e]
    args.sections = [s for s in args.sections.split(",") if s and s != "none"]
    workers = [int(w) for w in args.workers.split(",")]
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.duration = args.duration or (0.8 if args.quick else 2.0)
    args.open_duration = args.open_duration or (1.0 if args.quick else 3.0)
    args.logins = 200 if args.quick else 300
    unknown = set(args.backends) - set(BACKENDS) | set(args.endpoints) - set(ENDPOINTS)
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    os.sched_setaffinity(0, {CLIENT_CPU})

    def log(message: str) -> None:
        print(message, flush=True)

    started = dt.datetime.now(dt.UTC)
    data: dict = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {
            "argv": sys.argv,
            "quick": args.quick,
            "backends": args.backends,
            "workers": workers,
            "threads": 4,
            "endpoints": args.endpoints,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "open_duration_s": args.open_duration,
            "processes": 8,
            "units": {
                "per_cpu_s": "successful requests (logins: complete logins) per server CPU-second",
                "per_s": "successful requests per wall-clock second",
                "p50_ms": "milliseconds",
                "rss_mib": 'MiB resident after the load; "peak": the most during it (VmHWM)',
                "server_cpu_s": "CPU-seconds, user + system, whole process tree",
                "client_cpu_share": "load generator CPU-seconds per wall-clock second (1.0 = "
                "CPU 1 saturated)",
            },
        },
        "idp": [],
        "reference": [],
    }
    idp_backends = [b for b in args.backends if b != "peer"]
    for count in workers if idp_backends else ():
        port = free_port()
        ref = Server(
            f"reference x{count}",
            [
                PYTHON,
                str(HERE / "reference.py"),
                "--port",
                str(port),
                "--workers",
                str(count),
                "--threads",
                "4",
            ],
            port,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            ref.wait_up("/jwks.json")
            state = {"next_code": 0}
            for backend in idp_backends:
                log(f"IdP {backend}, {count} worker(s), beside the reference")
                data["idp"].append(bench_idp(args, backend, count, ref, state, log))
            data["reference"].append({"workers": count, "rss_mib": rss_of(ref.pid)})
        finally:
            ref.stop()
    if "peer" in args.backends:
        log("Node.js peer")
        data["peer"] = bench_peer(args, log)
    if args.sections:
        log("Optional sections")
        data["sections"] = sections(args, log)
    data["reference_detail"] = reference_detail(data)
    data["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.out / "README.md").write_text(markdown(data))
    log(f"wrote {args.out / 'latest.json'} and {args.out / 'README.md'}")


if __name__ == "__main__":
    main()
