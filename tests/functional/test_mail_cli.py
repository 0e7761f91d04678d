"""``idp mail send`` / ``idp mail status``, and the sender thread of ``idp serve``, against a
real SMTP server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import requests

from tests.functional.test_cli_and_demo import free_port, run_idp
from tests.support.smtp import text_of


def smtp_env(server) -> dict[str, str]:
    return {
        "IDP_SMTP_HOST": server.host,
        "IDP_SMTP_PORT": str(server.port),
        "IDP_MAIL_FROM": "idp@example.test",
    }


def invite(tmp_path, env, rpps="10000000017", email="jules@example.fr") -> str:
    result = run_idp(
        "practitioner",
        "invite",
        "--rpps",
        rpps,
        "--given-name",
        "Jules",
        "--family-name",
        "Durand",
        "--email",
        email,
        tmp_path=tmp_path,
        env_extra=env,
    )
    return json.loads(result.stdout)["enrolment_url"]


def test_mail_status_and_send(tmp_path, smtp_server):
    env = smtp_env(smtp_server)
    run_idp("db", "upgrade", tmp_path=tmp_path, env_extra=env)
    link = invite(tmp_path, env)  # printed for the operator, and queued

    status = json.loads(run_idp("mail", "status", "--json", tmp_path=tmp_path).stdout)
    assert status["waiting"] == 1 and status["sent"] == 0 and status["failed"] == 0
    assert status["oldest_waiting"]

    off = run_idp("mail", "send", tmp_path=tmp_path)  # no IDP_SMTP_HOST: mail is off
    assert "IDP_SMTP_HOST is not set" in off.stderr and "sent 0" in off.stdout
    assert smtp_server.messages == []

    sent = run_idp("mail", "send", "--json", tmp_path=tmp_path, env_extra=env)
    assert json.loads(sent.stdout)["sent"] == 1
    [message] = smtp_server.wait_for(1)
    assert message["To"] == "jules@example.fr" and link in text_of(message)

    status = run_idp("mail", "status", tmp_path=tmp_path, env_extra=env).stdout
    assert "waiting: 0" in status and "sent: 1" in status and "failed: 0" in status
    assert "sent 0" in run_idp("mail", "send", tmp_path=tmp_path, env_extra=env).stdout


def test_mail_send_exits_1_when_the_server_is_down(tmp_path):
    env = {"IDP_SMTP_HOST": "127.0.0.1", "IDP_SMTP_PORT": str(free_port())}
    run_idp("db", "upgrade", tmp_path=tmp_path, env_extra=env)
    link = invite(tmp_path, env)
    down = run_idp("mail", "send", tmp_path=tmp_path, env_extra=env, check=False)
    assert down.returncode == 1
    assert "cannot reach 127.0.0.1" in down.stderr and "1 message(s) waiting" in down.stderr
    assert link.rsplit("/", 1)[1] not in down.stderr + down.stdout
    status = json.loads(run_idp("mail", "status", "--json", tmp_path=tmp_path).stdout)
    assert status["waiting"] == 1 and status["next_attempt_at"] > status["oldest_waiting"]


def test_the_served_app_delivers_in_the_background_once(tmp_path, smtp_server):
    port = free_port()
    env = {
        "IDP_ENV": "production",
        "IDP_SECRET_KEY": "k" * 64,
        "IDP_DATA_KEY": "d" * 64,
        "IDP_ISSUER": f"http://localhost:{port}",
        **smtp_env(smtp_server),
    }
    run_idp("db", "upgrade", tmp_path=tmp_path, env_extra=env)
    links = [
        invite(tmp_path, env, rpps=rpps, email=f"p{rpps}@example.fr")
        for rpps in ("10000000017", "10000000025", "10000000033")
    ]
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    server_env.update(env, IDP_INSTANCE_PATH=str(tmp_path))
    server = subprocess.Popen(
        [sys.executable, "-m", "idp.cli", "serve", "--port", str(port), "--workers", "2"],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        received = smtp_server.wait_for(3, timeout=60)
        for _ in range(100):  # the page still answers while mail goes out
            try:
                assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        time.sleep(6)  # more than a pass of both workers: nothing is sent twice
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert len(smtp_server.messages) == 3
    assert sorted(link for m in received for link in links if link in text_of(m)) == sorted(links)
