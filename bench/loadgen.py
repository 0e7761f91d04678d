"""The load generator of bench/run.py: forked Python processes (pinned where the harness
runs, CPU 1), one keep-alive ``http.client`` connection each, every response's status
checked.

A *scenario* is one unit of work (a request, or a complete login of several requests) done
on a connection with one *item* (a code, a token, a practitioner…). ``closed`` runs as many
units as the processes manage for a duration; ``open_loop`` sends on a fixed schedule and
measures latency from each scheduled send time (a late send counts its wait).
"""

from __future__ import annotations

import base64
import http.client
import json
import multiprocessing
import os
import re
import secrets
import time
from urllib.parse import urlencode, urlsplit

CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


class Connection:
    """One keep-alive connection to 127.0.0.1:port, sending ``Host: host_header`` (the
    issuer's host, so WebAuthn sees its own origin), with a small cookie jar."""

    def __init__(self, port: int, host_header: str) -> None:
        self.port = port
        self.host_header = host_header
        self.cookies: dict[str, str] = {}
        self.http = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body=None, headers=None):
        headers = {"Host": self.host_header, **(headers or {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if isinstance(body, dict):
            body = urlencode(body)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (0, 1):
            try:
                self.http.request(method, path, body=body, headers=headers)
                response = self.http.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.http.close()  # the server closed an idle keep-alive connection
                if attempt:
                    raise
        for header in response.msg.get_all("Set-Cookie") or ():
            name, _eq, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value and "max-age=0" not in header.lower():
                self.cookies[name.strip()] = value
            else:
                self.cookies.pop(name.strip(), None)
        return response.status, response.headers, data

    def close(self) -> None:
        self.http.close()


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


# --------------------------------------------------------------------------- scenarios
# Each returns (ok, requests sent, something to hand back or None, status if not ok).


def get(conn: Connection, ctx: dict, item):
    status, _headers, _body = conn.request("GET", ctx["path"])
    return status == 200, 1, None, status


def token(conn: Connection, ctx: dict, code: str):
    status, _headers, body = conn.request(
        "POST",
        "/token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": ctx["redirect_uri"],
            "code_verifier": ctx["verifier"],
        },
        {"Authorization": ctx["auth"]},
    )
    if status != 200:
        return False, 1, None, status
    return True, 1, json.loads(body)["access_token"], status


def userinfo(conn: Connection, ctx: dict, access_token: str):
    status, _headers, _body = conn.request(
        "GET", "/userinfo", headers={"Authorization": f"Bearer {access_token}"}
    )
    return status == 200, 1, None, status


def peer_token(conn: Connection, ctx: dict, item):
    status, _headers, _body = conn.request(
        "POST", "/token", ctx["form"], {"Authorization": ctx["auth"]}
    )
    return status == 200, 1, None, status


def follow(conn: Connection, ctx: dict, status: int, headers, body: bytes, sent: int):
    """Redirects inside the IdP; stops at the client's redirect URI."""
    while status in (301, 302, 303) and not headers["Location"].startswith(ctx["redirect_uri"]):
        parts = urlsplit(headers["Location"])
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        status, headers, body = conn.request("GET", path)
        sent += 1
    return status, headers, body, sent


def authorize_path(ctx: dict) -> str:
    challenge = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return "/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": ctx["client_id"],
            "redirect_uri": ctx["redirect_uri"],
            "scope": "openid profile email rpps",
            "state": secrets.token_urlsafe(8),
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )


def landed(ctx: dict, status: int, headers) -> bool:
    location = headers.get("Location") or ""
    return status in (302, 303) and location.startswith(ctx["redirect_uri"]) and "code=" in location


def csrf(body: bytes) -> str | None:
    match = CSRF_RE.search(body.decode())
    return match.group(1) if match else None


def login_totp(conn: Connection, ctx: dict, person: dict):
    """GET /authorize → login page → POST /login → TOTP page → POST /login/totp → 303 with
    the code, on a fresh session."""
    import pyotp

    conn.cookies.clear()
    status, headers, body = conn.request("GET", authorize_path(ctx))
    status, headers, body, sent = follow(conn, ctx, status, headers, body, 1)
    token_ = csrf(body) if status == 200 else None
    if token_ is None:
        return False, sent, person, f"authorize {status}"
    status, headers, body = conn.request(
        "POST",
        "/login",
        {"csrf_token": token_, "identifier": person["username"], "password": ctx["password"]},
    )
    status, headers, body, sent = follow(conn, ctx, status, headers, body, sent + 1)
    token_ = csrf(body) if status == 200 else None
    if token_ is None:
        return False, sent, person, f"password {status}"
    code = pyotp.TOTP(person["totp_secret"]).generate_otp(person["step"])
    status, headers, body = conn.request(
        "POST", "/login/totp", {"csrf_token": token_, "code": code}
    )
    status, headers, body, sent = follow(conn, ctx, status, headers, body, sent + 1)
    return landed(ctx, status, headers), sent, person, f"totp {status}"


def login_passkey(conn: Connection, ctx: dict, key: dict):
    """GET /authorize → login page → passkey options → POST /login/passkey → 303 with the
    code, a software authenticator's assertion (no browser)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from tests.support.webauthn_crafting import SoftAuthenticator, b64url_decode

    conn.cookies.clear()
    status, headers, body = conn.request("GET", authorize_path(ctx))
    status, headers, body, sent = follow(conn, ctx, status, headers, body, 1)
    token_ = csrf(body) if status == 200 else None
    if token_ is None:
        return False, sent, key, f"authorize {status}"
    status, headers, options = conn.request(
        "POST",
        "/login/passkey/options",
        {"csrf_token": token_},
        {"X-CSRFToken": token_, "Accept": "application/json"},
    )
    sent += 1
    if status != 200:
        return False, sent, key, f"options {status}"
    authn = SoftAuthenticator(
        private_key=load_pem_private_key(key["private_key"].encode(), None),
        credential_id=bytes.fromhex(key["credential_id"]),
        user_handle=bytes.fromhex(key["user_handle"]),
        sign_count=key["sign_count"],
    )
    assertion = authn.authentication_response(
        challenge=b64url_decode(json.loads(options)["challenge"]), origin=ctx["origin"]
    )
    key["sign_count"] = authn.sign_count
    status, headers, body = conn.request(
        "POST", "/login/passkey", {"csrf_token": token_, "credential": json.dumps(assertion)}
    )
    status, headers, body, sent = follow(conn, ctx, status, headers, body, sent + 1)
    return landed(ctx, status, headers), sent, key, f"assertion {status}"


SCENARIOS = {
    "get": get,
    "token": token,
    "userinfo": userinfo,
    "peer_token": peer_token,
    "login_totp": login_totp,
    "login_passkey": login_passkey,
}

TOTP_STEP = 30


class Items:
    """What each unit uses: consumed once (codes), cycled (tokens, passkeys, nothing), or
    practitioners whose next unused TOTP step is the current or the next one."""

    def __init__(self, kind: str, items: list) -> None:
        self.kind, self.items, self.index = kind, items, 0

    def next(self, deadline: float):
        if self.kind == "once":
            if self.index >= len(self.items):
                return StopIteration
            self.index += 1
            return self.items[self.index - 1]
        if self.kind in ("cycle", "passkey_state"):
            item = self.items[self.index % len(self.items)] if self.items else None
            self.index += 1
            return item
        while time.time() < deadline:  # "totp"
            current = int(time.time()) // TOTP_STEP
            for _ in range(len(self.items)):
                person = self.items[self.index % len(self.items)]
                self.index += 1
                step = max(person.get("last_step", 0) + 1, current)
                if step <= current + 1:
                    person["step"] = person["last_step"] = step
                    return person
            time.sleep(0.2)
        return StopIteration


def worker(port, host_header, scenario, ctx, kind, items, start_at, duration, schedule):
    """One process: closed loop until the deadline (``schedule`` None), or one send per
    scheduled time. Returns its latencies (ms), counts, and what the scenario handed back."""
    run = SCENARIOS[scenario]
    source = Items(kind, items)
    conn = Connection(port, host_header)
    latencies: list[float] = []
    ok = errors = requests = 0
    statuses: dict[str, int] = {}
    handed: list = []
    deadline = start_at + duration
    time.sleep(max(0.0, start_at - time.time()))
    cpu = os.times()
    started = time.time()
    planned = iter(schedule or ())
    while True:
        if schedule is not None:
            at = next(planned, None)
            if at is None:
                break
            time.sleep(max(0.0, at - time.time()))
        elif time.time() >= deadline:
            break
        item = source.next(deadline)
        if item is StopIteration:
            break
        begin = at if schedule is not None else time.time()
        try:
            good, sent, back, status = run(conn, ctx, item)
        except Exception as exc:  # noqa: BLE001  a failed unit is an error, counted
            good, sent, back, status = False, 1, None, type(exc).__name__
            conn.close()
        latencies.append((time.time() - begin) * 1000)
        requests += sent
        if good:
            ok += 1
            if back is not None and scenario == "token":
                handed.append(back)
        else:
            errors += 1
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    finished = time.time()
    after = os.times()
    conn.close()
    if kind in ("totp", "passkey_state"):
        handed = items  # their TOTP steps and sign counts, for the next run
    return {
        "latencies": latencies,
        "ok": ok,
        "errors": errors,
        "statuses": statuses,
        "requests": requests,
        "started": started,
        "finished": finished,
        "client_cpu_s": (after.user + after.system) - (cpu.user + cpu.system),
        "handed": handed[:200] if scenario == "token" else handed,
    }


def split(items: list, parts: int) -> list[list]:
    return [items[i::parts] for i in range(parts)]


def percentile(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))], 2)


def run(
    *,
    port: int,
    host_header: str,
    scenario: str,
    ctx: dict,
    kind: str,
    items: list,
    processes: int,
    duration: float,
    rate: float | None = None,
    on_start=None,
) -> dict:
    """``processes`` forked workers, closed loop, or open loop at ``rate`` units/s.
    ``on_start`` is called just before the workers start (the harness reads CPU there)."""
    context = multiprocessing.get_context("fork")
    shares = split(items, processes) if kind != "cycle" else [items] * processes
    start_at = time.time() + 0.25
    schedules: list = [None] * processes
    if rate:
        total = int(rate * duration)
        times = [start_at + i / rate for i in range(total)]
        schedules = split(times, processes)
    with context.Pool(processes) as pool:
        if on_start:
            on_start()
        results = pool.starmap(
            worker,
            [
                (
                    port,
                    host_header,
                    scenario,
                    ctx,
                    kind,
                    shares[i],
                    start_at,
                    duration,
                    schedules[i],
                )
                for i in range(processes)
            ],
        )
    latencies = [value for result in results for value in result["latencies"]]
    statuses: dict[str, int] = {}
    for result in results:
        for status, count in result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    elapsed = max(r["finished"] for r in results) - min(r["started"] for r in results)
    ok = sum(r["ok"] for r in results)
    return {
        "ok": ok,
        "errors": sum(r["errors"] for r in results),
        "error_statuses": statuses,
        "http_requests": sum(r["requests"] for r in results),
        "elapsed_s": round(elapsed, 3),
        "per_s": round(ok / elapsed, 1) if elapsed > 0 else None,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "client_cpu_s": round(sum(r["client_cpu_s"] for r in results), 3),
        "handed": [item for r in results for item in r["handed"]],
    }
