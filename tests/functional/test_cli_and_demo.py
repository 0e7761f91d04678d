"""The operator command line (a contract) and the demo relying party."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

import requests
from werkzeug.serving import make_server

from tests.support.oidc import UserAgent, totp_now


def run_idp(*args, env_extra=None, tmp_path=None, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update({"IDP_INSTANCE_PATH": str(tmp_path), "IDP_ENV": "development"})
    env.update(env_extra or {})
    result = subprocess.run(
        [sys.executable, "-m", "idp.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_db_upgrade_seed_demo_and_client_add(tmp_path):
    assert "up to date" in run_idp("db", "upgrade", tmp_path=tmp_path).stdout
    first = json.loads(run_idp("seed-demo", "--json", tmp_path=tmp_path).stdout)
    second = json.loads(run_idp("seed-demo", "--json", tmp_path=tmp_path).stdout)
    assert first == second  # idempotent
    for key in (
        "issuer",
        "client_id",
        "client_secret",
        "redirect_uri",
        "username",
        "password",
        "totp_secret",
    ):
        assert first[key]
    added = json.loads(
        run_idp(
            "client",
            "add",
            "--name",
            "Pharmacie",
            "--redirect-uri",
            "https://app.example/cb",
            tmp_path=tmp_path,
        ).stdout
    )
    assert added["client_id"] and len(added["client_secret"]) >= 40
    refused = run_idp(
        "client",
        "add",
        "--name",
        "Bad",
        "--redirect-uri",
        "http://evil.example/cb",
        tmp_path=tmp_path,
        check=False,
    )
    assert refused.returncode == 2 and "https" in refused.stderr
    invited = json.loads(
        run_idp(
            "practitioner",
            "add",
            "--rpps",
            "10000000017",
            "--given-name",
            "Léa",
            "--family-name",
            "Durand",
            "--profession",
            "21",
            "--email",
            "lea@example.fr",
            tmp_path=tmp_path,
        ).stdout
    )
    assert invited["status"] == "invited" and "/enrol/" in invited["enrolment_url"]
    duplicate = run_idp(
        "practitioner",
        "add",
        "--rpps",
        "10000000017",
        "--given-name",
        "X",
        "--family-name",
        "Y",
        "--email",
        "other@example.fr",
        tmp_path=tmp_path,
        check=False,
    )
    assert duplicate.returncode == 2 and "Traceback" not in duplicate.stderr


def test_routes_inventory(tmp_path):
    out = run_idp("routes", tmp_path=tmp_path).stdout
    assert "/token" in out and "client" in out and "UNDECLARED" not in out


def test_serve_refuses_missing_keys_outside_development(tmp_path):
    result = run_idp("serve", tmp_path=tmp_path, env_extra={"IDP_ENV": "production"}, check=False)
    assert result.returncode == 2 and "IDP_SECRET_KEY" in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def production_server(
    tmp_path, *, workers: int, output=subprocess.DEVNULL, args=(), env_extra=None
):
    """``idp serve`` in production on a free port, its database upgraded first; its output (and
    errors) go to *output*; *args* and *env_extra* add options and variables. Returns the port
    and the process: the caller stops it."""
    port = free_port()
    keys = {
        "IDP_ENV": "production",
        "IDP_SECRET_KEY": "k" * 64,
        "IDP_DATA_KEY": "d" * 64,
        "IDP_ISSUER": f"http://localhost:{port}",
    }
    run_idp("db", "upgrade", tmp_path=tmp_path, env_extra=keys)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(keys, IDP_INSTANCE_PATH=str(tmp_path), **(env_extra or {}))
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "idp.cli", "serve"),
            *("--port", str(port), "--workers", str(workers), *args),
        ],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    return port, server


def test_serve_runs_gunicorn_workers(tmp_path):
    port, server = production_server(tmp_path, workers=2)
    try:
        for _ in range(300):  # up to 30 s: the CI machine is shared
            try:
                meta = requests.get(
                    f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=1
                )
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert meta.json()["issuer"] == f"http://localhost:{port}"
        assert (
            len(
                requests.get(meta.json()["jwks_uri"].replace("localhost", "127.0.0.1")).json()[
                    "keys"
                ]
            )
            >= 2
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_serve_keeps_one_time_secrets_out_of_the_access_log(tmp_path):
    log_path = tmp_path / "idp.log"
    token = secrets.token_urlsafe(32)
    with open(log_path, "wb") as log:  # gunicorn's access log (and its error log) go here
        port, server = production_server(tmp_path, workers=1, output=log)
    base = f"http://127.0.0.1:{port}"
    expected = (
        '"GET /enrol/[redacted] HTTP/1.1"',
        '"https://app.example/cb?code=[redacted]&state=st4te"',
        '"GET /smartcard/code/[redacted] HTTP/1.1"',
        '"GET /authorize?code=[redacted]&access_token=[redacted]&state=st4te HTTP/1.1"',
        '"GET /enrol/totp HTTP/1.1"',
    )
    try:
        for _ in range(300):  # up to 30 s: the CI machine is shared
            try:
                requests.get(f"{base}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        referer = {"Referer": "https://app.example/cb?code=R3FERERC0DE&state=st4te"}
        requests.get(f"{base}/enrol/{token}", headers=referer, allow_redirects=False)
        requests.get(f"{base}/smartcard/code/ABCD-EFGH", allow_redirects=False)
        requests.get(
            f"{base}/authorize?code=SECRET&access_token=SECRET2&state=st4te",
            allow_redirects=False,
        )
        requests.get(f"{base}/enrol/totp", allow_redirects=False)
        for _ in range(300):
            logged = log_path.read_text()
            if all(line in logged for line in expected):
                break
            time.sleep(0.1)
    finally:
        server.terminate()
        server.wait(timeout=10)
    logged = log_path.read_text()
    for line in expected:
        assert line in logged, logged
    for secret in (token, "ABCD-EFGH", "SECRET", "R3FERERC0DE"):
        assert secret not in logged, logged


def test_demo_relying_party_logs_in_through_the_idp(live_server, clock, monkeypatch):
    from idp.demo import seed
    from idp.demo_rp import create_rp_app

    port = free_port()
    with live_server.app.app_context():
        demo = seed(rp_url=f"http://localhost:{port}")
        from idp.db import get_db
        from idp.models import OAuthClient

        client = get_db().query(OAuthClient).filter_by(client_id=demo["client_id"]).one()
        assert client.name == "Appli de démonstration"
    monkeypatch.setenv("IDP_ISSUER", live_server.url)
    monkeypatch.setenv("DEMO_RP_CLIENT_ID", demo["client_id"])
    monkeypatch.setenv("DEMO_RP_CLIENT_SECRET", demo["client_secret"])
    monkeypatch.setenv("DEMO_RP_URL", f"http://localhost:{port}")
    rp_server = make_server("127.0.0.1", port, create_rp_app(), threaded=True)
    thread = threading.Thread(target=rp_server.serve_forever, daemon=True)
    thread.start()
    try:
        agent = UserAgent(live_server.url, client_redirect_prefix="never://")
        home = agent.get(f"http://localhost:{port}/")
        assert "Se connecter" in home.text
        asked = agent.http.get(
            f"http://localhost:{port}/login?acr_values=phrh", allow_redirects=False
        )
        query = parse_qs(urlsplit(asked.headers["Location"]).query)
        assert query["acr_values"] == ["phrh"] and query["code_challenge_method"] == ["S256"]
        assert query["state"][0] and query["nonce"][0] and query["code_challenge"][0]
        page = agent.get(f"http://localhost:{port}/login")
        page = agent.post(
            "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
        )
        result = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
        assert result.url.startswith(f"http://localhost:{port}/")
        assert "substantial" in result.text and "mfa" in result.text
        assert demo["username"] in result.text
        assert (
            f'href="{live_server.url}/account"' in result.text and "Se déconnecter" in result.text
        )
        out = agent.http.post(f"http://localhost:{port}/logout")
        assert "Se connecter" in out.text and demo["username"] not in out.text
    finally:
        rp_server.shutdown()


def test_operator_manages_practitioners_and_every_action_is_audited(tmp_path):
    import sqlite3

    run_idp("db", "upgrade", tmp_path=tmp_path)
    invited = json.loads(
        run_idp(
            "practitioner",
            "invite",
            "--rpps",
            "10000000017",
            "--given-name",
            "Jules",
            "--family-name",
            "Durand",
            "--email",
            "jules@example.fr",
            tmp_path=tmp_path,
        ).stdout
    )
    assert invited["status"] == "invited" and "/enrol/" in invited["enrolment_url"]
    # `add`, the earlier name, still works.
    run_idp(
        "practitioner",
        "add",
        "--rpps",
        "10000000025",
        "--given-name",
        "Ana",
        "--family-name",
        "Roux",
        "--profession",
        "21",
        "--email",
        "ana@example.fr",
        tmp_path=tmp_path,
    )
    listed = json.loads(run_idp("practitioner", "list", "--json", tmp_path=tmp_path).stdout)
    assert [p["rpps"] for p in listed] == ["10000000017", "10000000025"]
    page = json.loads(
        run_idp(
            "practitioner", "list", "--json", "--after", "10000000017", tmp_path=tmp_path
        ).stdout
    )
    assert [p["rpps"] for p in page] == ["10000000025"]
    one = run_idp("practitioner", "list", "--json", "--limit", "1", tmp_path=tmp_path)
    assert [p["rpps"] for p in json.loads(one.stdout)] == ["10000000017"]
    none = run_idp("practitioner", "list", "--limit", "0", tmp_path=tmp_path, check=False)
    assert none.returncode == 2 and "0" in none.stderr  # a page holds 1 to 10000
    shown = json.loads(
        run_idp("practitioner", "show", "10000000025", "--json", tmp_path=tmp_path).stdout
    )
    assert shown["profession_code"] == "21" and shown["factors"] == []
    assert shown["recovery_codes_left"] == 0  # an invited practitioner: none until a factor
    assert shown["last_login_at"] is None and "password_hash" not in shown

    disabled = run_idp(
        "practitioner", "disable", "10000000025", "--operator", "alice", tmp_path=tmp_path
    )
    assert json.loads(disabled.stdout) == {"rpps": "10000000025", "status": "disabled"}
    again = run_idp("practitioner", "disable", "10000000025", tmp_path=tmp_path, check=False)
    assert again.returncode == 2 and "already disabled" in again.stderr
    unknown = run_idp("practitioner", "show", "19999999999", tmp_path=tmp_path, check=False)
    assert unknown.returncode == 2 and "no practitioner" in unknown.stderr
    enabled = json.loads(run_idp("practitioner", "enable", "10000000025", tmp_path=tmp_path).stdout)
    assert enabled["status"] == "invited"  # no password chosen yet: back to invited
    with sqlite3.connect(tmp_path / "idp.sqlite3") as db:
        rows = db.execute(
            "SELECT event, details_json FROM audit_events"
            " WHERE event LIKE 'account:practitioner:%abled' ORDER BY id"
        ).fetchall()
    assert [event for event, _ in rows] == [
        "account:practitioner:disabled",
        "account:practitioner:enabled",
    ]
    operators = [json.loads(details)["operator"] for _, details in rows]
    assert operators[0] == "alice" and operators[1]  # else the Unix user

    # A new link for someone still invited: the earlier one stops working.
    resent = json.loads(
        run_idp("invite", "resend", "10000000017", "--operator", "bob", tmp_path=tmp_path).stdout
    )
    assert resent["enrolment_url"] != invited["enrolment_url"]
    tail = run_idp(
        "audit", "tail", "--practitioner", "10000000017", "--json", tmp_path=tmp_path
    ).stdout.splitlines()
    events = [json.loads(line) for line in tail]
    assert [e["event"] for e in events][-2:] == [
        "account:invitation:created",
        "account:invitation:resent",
    ]
    assert events[-1]["details"] == {"operator": "bob"}
    assert all(e["practitioner_id"] == events[0]["practitioner_id"] for e in events)
    with sqlite3.connect(tmp_path / "idp.sqlite3") as db:
        [(first_expiry, first_made), (second_expiry, _)] = db.execute(
            "SELECT expires_at, created_at FROM invitations WHERE practitioner_id ="
            " (SELECT id FROM practitioners WHERE rpps = '10000000017') ORDER BY id"
        ).fetchall()
    assert first_made < first_expiry < second_expiry  # the first link ended at the resend
    text = run_idp("audit", "tail", "-n", "1", tmp_path=tmp_path).stdout
    assert text.count("\n") == 1 and "account:invitation:resent" in text and "operator=bob" in text


def test_import_reports_bad_lines_then_invites_a_whole_file(tmp_path):
    run_idp("db", "upgrade", tmp_path=tmp_path)
    header = "rpps;given_name;family_name;profession_code;email\n"
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "10000000017;Jules;Durand;10;jules@example.fr\n1234;A;B;10;x@y.fr\n")
    rejected = run_idp("practitioner", "import", str(bad), tmp_path=tmp_path, check=False)
    assert rejected.returncode == 2
    assert "line 3: RPPS must be 11 digits" in rejected.stderr and "nothing imported" in (
        rejected.stderr
    )
    good = tmp_path / "good.csv"
    good.write_text(header + "10000000017;Jules;Durand;10;jules@example.fr\n", encoding="utf-8-sig")
    checked = run_idp("practitioner", "import", str(good), "--dry-run", tmp_path=tmp_path)
    assert [json.loads(line) for line in checked.stdout.splitlines()] == [
        {"rpps": "10000000017", "status": "checked"}
    ]
    assert json.loads(run_idp("practitioner", "list", "--json", tmp_path=tmp_path).stdout) == []
    done = run_idp("practitioner", "import", str(good), tmp_path=tmp_path)
    [line] = [json.loads(line) for line in done.stdout.splitlines()]
    assert line["status"] == "invited" and "/enrol/" in line["enrolment_url"]
