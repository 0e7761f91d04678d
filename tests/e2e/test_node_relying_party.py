"""openid-client (Node.js), an independent certified-style RP, against the live IdP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.oidc import UserAgent, totp_now

NODE_RP = Path(__file__).parent / "node_rp"
REDIRECT = "http://localhost:9999/callback"


def require_node_rp() -> None:
    missing = None
    if not shutil.which("node"):
        missing = "node"
    elif not (NODE_RP / "node_modules" / "openid-client").is_dir():
        missing = "openid-client (run `npm ci` in tests/e2e/node_rp)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is required in CI", pytrace=False)
        pytest.skip(f"{missing} not installed")


def test_openid_client_completes_the_flow(live_server, demo, clock):
    require_node_rp()
    process = subprocess.Popen(
        ["node", "rp.mjs", live_server.url, demo["client_id"], demo["client_secret"], REDIRECT],
        cwd=NODE_RP,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        start = json.loads(process.stdout.readline() or "{}")
        assert "url" in start, process.stderr.read()
        agent = UserAgent(live_server.url)
        page = agent.get(start["url"])
        page = agent.post(
            "/login", {"identifier": demo["username"], "password": demo["password"]}, page.text
        )
        callback = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
        process.stdin.write(callback.headers["Location"] + "\n")
        process.stdin.flush()
        result = json.loads(process.stdout.readline())
    finally:
        process.kill()
        process.wait(timeout=10)
    assert "error" not in result, result
    assert result["claims"]["iss"] == live_server.url
    assert result["claims"]["amr"] == ["pwd", "otp", "mfa"]
    assert result["userinfo"]["rpps"] == demo["username"]
