"""Real-browser WebAuthn harness: Debian Chromium driven by Playwright, virtual authenticators.

Use Debian's /usr/bin/chromium, never ``playwright install`` (TESTING.md). Pytest only collects
fixtures from conftest files and test modules, so a test module imports the fixtures it uses::

    from tests.support.browser import browser_page_fixture, chromium_browser_fixture  # noqa: F401

A virtual authenticator belongs to one tab: keep each journey in one page.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
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
    """A fresh context (cookies, storage) and page per test, scanned by axe-core.

    Every page of the context gets axe-core; each document of an origin registered with
    :func:`scan_origin` is scanned when it has loaded, again once the page has settled after
    a change to its content (a message shown by a script), and the page still open when the
    test ends is scanned from here. The IdP's live server registers its origin, and so does a
    test that serves the demo application: stub pages a test serves itself (a client's
    landing page, the WebAuthn harness) are on other origins and are not scanned. A
    "serious" or "critical" violation fails the test at teardown, with the rule, its impact,
    the page's URL and the elements concerned.
    """
    with scanned_page(chromium_browser) as page:
        yield page


@contextlib.contextmanager
def scanned_page(browser: Any, **context_options: Any) -> Iterator[Any]:
    """A page in a new context of ``browser`` with the axe-core scan (see ``browser_page``)."""
    context = browser.new_context(**context_options)
    scan = install_accessibility_scan(context)
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        yield page
        scan.finish()
    finally:
        context.close()
    scan.fail_on_violations()


# --------------------------------------------------------------------------- accessibility scan

AXE_PATH = Path(__file__).resolve().parents[1] / "e2e/axe/node_modules/axe-core/axe.min.js"
SCANNED_IMPACTS = ("serious", "critical")
_SCANNED_ORIGINS: Counter[str] = Counter()

# Runs in every document after axe.min.js. Scans go one after another (axe refuses to run
# twice at once); a document that navigates away mid-scan simply never reports.
_SCAN_SCRIPT = """
(() => {
  if (window.top !== window || window.__idpA11yScan) return;
  const IMPACTS = %(impacts)s;
  let queue = Promise.resolve(), timer = null, scanning = false, dirty = false, changes = 0;
  let wanted = null;  // asked once per document: its server may stop before the last scan
  const once = async (reason) => {
    if (wanted === null) wanted = await window.__idpA11yWanted(location.origin);
    if (!wanted) return false;
    if (typeof axe === "undefined") {
      await window.__idpA11yReport({url: location.href, reason, error: "axe-core not loaded"});
      return true;
    }
    scanning = true;
    try {
      const result = await axe.run(document, {resultTypes: ["violations"]});
      const violations = result.violations
        .filter((v) => IMPACTS.includes(v.impact))
        .map((v) => ({id: v.id, impact: v.impact, help: v.help,
                      targets: v.nodes.map((n) => n.target.join(" "))}));
      await window.__idpA11yReport({url: location.href, reason, violations});
    } catch (error) {
      await window.__idpA11yReport({url: location.href, reason, error: String(error)});
    } finally {
      scanning = false;
    }
    return true;
  };
  const scan = (reason) => (queue = queue.then(() => once(reason)));
  const later = () => {
    if (scanning) { dirty = true; return; }
    clearTimeout(timer);
    if (changes < 20) timer = setTimeout(() => { changes++; scan("change").then(after); }, 150);
  };
  const after = () => { if (dirty) { dirty = false; later(); } };
  window.__idpA11yScan = (reason) => { clearTimeout(timer); return scan(reason); };
  addEventListener("load", () => {
    scan("load").then((wanted) => {
      if (!wanted) return;
      new MutationObserver(later).observe(document.body, {
        subtree: true, childList: true, characterData: true,
        attributes: true, attributeFilter: ["hidden", "class", "style", "open"],
      });
    });
  });
})();
"""


def scan_origin(url: str) -> Callable[[], None]:
    """Have the browser fixture scan every page of ``url``'s origin; returns the undo.

    A port freed by a stopped server may serve a stub next: undo when the server stops.
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    _SCANNED_ORIGINS[origin] += 1

    def undo() -> None:
        _SCANNED_ORIGINS[origin] -= 1
        if _SCANNED_ORIGINS[origin] <= 0:
            del _SCANNED_ORIGINS[origin]

    return undo


@dataclass
class AccessibilityScan:
    """What axe-core reported for one browser context."""

    context: Any
    enabled: bool = True
    violations: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    scans: list[str] = field(default_factory=list)  # "reason url" of each scan that reported

    def _report(self, payload: dict[str, Any]) -> None:
        url = payload.get("url", "?")
        self.scans.append(f"{payload.get('reason')} {url}")
        if "error" in payload:
            self.errors.append(f"{url}: {payload['error']}")
        for violation in payload.get("violations", []):
            self.violations.append({**violation, "url": url})

    def finish(self) -> None:
        """Scan the pages still open (their last state), waiting for scans under way."""
        if not self.enabled:
            return
        from playwright.sync_api import Error

        for page in self.context.pages:
            for _attempt in range(3):  # a page navigating now: scan the next document
                try:
                    page.wait_for_load_state("load", timeout=5_000)
                    page.evaluate(
                        "async () => { if (window.__idpA11yScan) await window.__idpA11yScan('end');"
                        " else if (await window.__idpA11yWanted(location.origin))"
                        " await window.__idpA11yReport({url: location.href, reason: 'end',"
                        " error: 'the scan script did not run'}); }"
                    )
                    break
                except Error as exc:
                    if page.is_closed():
                        break
                    if "context was destroyed" not in str(exc) and "navigat" not in str(exc):
                        raise

    def problems(self) -> list[str]:
        """One line per rule and page: rule id, impact, URL, the elements concerned."""
        lines: dict[tuple[str, str], dict[str, Any]] = {}
        for v in self.violations:
            entry = lines.setdefault((v["id"], v["url"]), {"v": v, "targets": []})
            entry["targets"] += [t for t in v["targets"] if t not in entry["targets"]]
        found = [
            f"{v['id']} ({v['impact']}) on {url}: {', '.join(e['targets'])} - {v['help']}"
            for (_, url), e in lines.items()
            for v in [e["v"]]
        ]
        return found + [f"axe-core could not scan {error}" for error in self.errors]

    def fail_on_violations(self) -> None:
        problems = self.problems()
        if problems:
            pytest.fail(
                "accessibility (axe-core, serious or critical):\n  " + "\n  ".join(problems),
                pytrace=False,
            )


def install_accessibility_scan(context: Any, *, axe_path: Path = AXE_PATH) -> AccessibilityScan:
    """Inject axe-core and the scan script into every page of ``context``.

    Without axe-core (``make install-test`` installs it) the scan fails the test in CI and is
    skipped, with a warning, elsewhere.
    """
    if not axe_path.is_file():
        reason = f"axe-core missing at {axe_path} (run make install-test)"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set: refusing to skip the accessibility scan)")
        warnings.warn(reason + ": pages are not scanned", stacklevel=2)
        return AccessibilityScan(context, enabled=False)
    scan = AccessibilityScan(context)
    context.expose_function("__idpA11yWanted", lambda origin: origin in _SCANNED_ORIGINS)
    context.expose_function("__idpA11yReport", scan._report)
    context.add_init_script(path=str(axe_path))
    context.add_init_script(script=_SCAN_SCRIPT % {"impacts": json.dumps(SCANNED_IMPACTS)})
    return scan


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
