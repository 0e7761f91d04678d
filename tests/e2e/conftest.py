"""Browser fixtures shared by every e2e module, so one Chromium serves the whole session, and
the demo relying party in front of the live IdP."""

from __future__ import annotations

import socket
import threading

import pytest
from werkzeug.serving import make_server

from tests.support.browser import (  # noqa: F401  (fixtures are found by name)
    browser_page_fixture,
    chromium_browser_fixture,
    scan_origin,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def demo_rp(live_server, monkeypatch):
    """The demo app (idp/demo_rp.py) on its own port, registered with the live IdP as the
    seeded demo client; yields ``(rp_url, demo)``."""
    from idp.demo import seed
    from idp.demo_rp import create_rp_app

    port = free_port()
    rp_url = f"http://localhost:{port}"
    with live_server.app.app_context():
        demo = seed(rp_url=rp_url)
    for name, value in {
        "IDP_ISSUER": live_server.url,
        "DEMO_RP_URL": rp_url,
        "DEMO_RP_CLIENT_ID": demo["client_id"],
        "DEMO_RP_CLIENT_SECRET": demo["client_secret"],
    }.items():
        monkeypatch.setenv(name, value)
    server = make_server("127.0.0.1", port, create_rp_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    unscan = scan_origin(rp_url)  # the demo application's pages are scanned too
    yield rp_url, demo
    unscan()
    server.shutdown()
