"""Real-browser WebAuthn harness: Debian Chromium driven by Playwright, virtual authenticators.

Use Debian's /usr/bin/chromium, never ``playwright install`` (TESTING.md). Pytest only collects
fixtures from conftest files and test modules, so a test module imports the fixtures it uses::

    from tests.support.browser import browser_page_fixture, chromium_browser_fixture  # noqa: F401

A virtual authenticator belongs to one tab: keep each journey in one page.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium(*, chromium_path: str = CHROMIUM_PATH) -> None:
    """Skip without Chromium or Playwright, but fail in CI: a missing tool must not pass."""
    missing = []
    if not os.access(chromium_path, os.X_OK):
        missing.append(chromium_path)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip)")
    if not missing:
        return
    reason = "browser tests need " + ", ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI is set: refusing to skip)", pytrace=False)
    pytest.skip(reason)


def launch_chromium(playwright: Any) -> Any:
    """Launch headless Debian Chromium with the flags from TESTING.md."""
    return playwright.chromium.launch(
        executable_path=CHROMIUM_PATH, headless=True, args=list(CHROMIUM_ARGS)
    )


# --------------------------------------------------------------------------- fixtures


_SHARED: dict[str, Any] = {}


@pytest.fixture(scope="session", name="chromium_browser")
def chromium_browser_fixture() -> Iterator[Any]:
    """One browser per session: start-up costs more than a ceremony.

    Each module (or conftest) importing this fixture makes its own session-scoped definition,
    and two Playwright drivers cannot run in one thread: the definitions share one browser,
    closed when the last of them is torn down.
    """
    require_chromium()
    if not _SHARED:
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        _SHARED.update(playwright=playwright, browser=launch_chromium(playwright), users=0)
    _SHARED["users"] += 1
    try:
        yield _SHARED["browser"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            _SHARED["browser"].close()
            _SHARED["playwright"].stop()
            _SHARED.clear()


@pytest.fixture(name="browser_page")
def browser_page_fixture(chromium_browser: Any) -> Iterator[Any]:
    """A fresh context (cookies, storage) and page per test."""
    context = chromium_browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        yield page
    finally:
        context.close()


# --------------------------------------------------------------------------- virtual authenticator


def add_virtual_authenticator(
    page: Any,
    *,
    transport: str = "internal",
    resident_key: bool = True,
    user_verified: bool = True,
    protocol: str = "ctap2",
) -> tuple[Any, str]:
    """Attach a CTAP2 virtual authenticator with UV to ``page``; returns (cdp, authenticator_id)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    result = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": protocol,
                "transport": transport,
                "hasResidentKey": resident_key,
                "hasUserVerification": True,
                "isUserVerified": user_verified,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, result["authenticatorId"]


def remove_virtual_authenticator(cdp: Any, authenticator_id: str) -> None:
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": authenticator_id})


def get_credentials(cdp: Any, authenticator_id: str) -> list[dict[str, Any]]:
    """Credentials held by the authenticator; CDP binary fields are standard base64."""
    return cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator_id})["credentials"]


def set_user_verified(cdp: Any, authenticator_id: str, *, verified: bool) -> None:
    """With ``verified=False`` the next ceremony fails with NotAllowedError."""
    cdp.send(
        "WebAuthn.setUserVerified",
        {"authenticatorId": authenticator_id, "isUserVerified": verified},
    )


def add_credential(
    cdp: Any,
    authenticator_id: str,
    *,
    credential_id: bytes,
    rp_id: str,
    private_key: ec.EllipticCurvePrivateKey | None = None,
    user_handle: bytes | None = None,
    sign_count: int = 0,
    resident: bool = True,
    backup_eligible: bool | None = None,
    backup_state: bool | None = None,
) -> ec.EllipticCurvePrivateKey:
    """Plant a credential (e.g. with a chosen sign count); returns its private key.

    Chromium refuses a resident credential without a user handle.
    """
    if resident and user_handle is None:
        raise ValueError("a resident credential needs a user_handle")
    key = private_key or ec.generate_private_key(ec.SECP256R1())
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    credential: dict[str, Any] = {
        "credentialId": _b64(credential_id),
        "isResidentCredential": resident,
        "rpId": rp_id,
        "privateKey": _b64(pkcs8),
        "signCount": sign_count,
    }
    if user_handle is not None:
        credential["userHandle"] = _b64(user_handle)
    if backup_eligible is not None:
        credential["backupEligibility"] = backup_eligible
    if backup_state is not None:
        credential["backupState"] = backup_state
    cdp.send(
        "WebAuthn.addCredential", {"authenticatorId": authenticator_id, "credential": credential}
    )
    return key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- serving an app


def serve_wsgi_app(app: Callable[..., Any]) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` on 127.0.0.1, a free port, in a thread; returns (base_url, stop).

    The URL uses the name ``localhost``: a secure context over HTTP, so the RP ID is
    ``localhost`` and the expected origin is ``http://localhost:PORT``.
    """
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="wsgi-test-server", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://localhost:{server.server_port}", stop
