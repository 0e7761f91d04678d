"""Screenshots of the main pages, for the README: ``python scripts/screenshots.py --out DIR``.

Starts the real thing on the embedded default, as ``idp demo`` does, in a temporary instance
folder (SQLite, development keys): ``idp db upgrade``, ``idp seed-demo --json``, ``idp serve``
and the demo app (``python -m idp.demo_rp``), each in its own process on a free port. Then a
headless Chromium (Debian's, driven by Playwright) walks through the pages in French and writes
one PNG of the viewport per page, under fixed names. Exits non-zero when a step fails.

The pages are found by these selectors (keep them when the templates change):

- demo app: the link named "Se connecter"; its error page's ``[role=alert]``;
- login: ``input[name=identifier]``, ``input[name=password]``,
  ``form[action='/login'] button[type=submit]``;
- second step: ``input[name=code]``, ``section.signing-in``,
  ``form[action='/login/totp'] button[type=submit]``;
- error page: ``.error-reference``;
- consent: ``button[name=consent_decision][value=approve|deny]``;
- account page: ``/account`` answers 200 once signed in, with an ``h1``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--font-render-hinting=none",
]
DESKTOP = {"width": 1280, "height": 800}
MOBILE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000

#: The files written, in order: the README refers to these names.
SHOTS = (
    "error.png",
    "login.png",
    "login-mobile.png",
    "login-code.png",
    "demo-app.png",
    "account.png",
    "consent.png",
    "demo-app-error.png",
    "login-step-up.png",
    "confirm.png",
)


class Failure(Exception):
    """A step did not go as expected: the message says which."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def idp_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "idp.cli", *args]


def run(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(  # noqa: S603  (our own interpreter and module)
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise Failure(f"{' '.join(command[2:])} failed:\n{result.stderr.strip()}")
    return result.stdout


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise Failure(f"{url}: the server exited with {process.returncode}")
        try:
            requests.get(url, timeout=1, allow_redirects=False)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise Failure(f"{url} did not answer within {timeout:.0f} s")


def start(command: list[str], env: dict[str, str], stack: ExitStack, log: Path):
    output = stack.enter_context(log.open("w"))
    process = subprocess.Popen(  # noqa: S603
        command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT
    )

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    stack.callback(stop)
    return process


def start_servers(instance: Path, stack: ExitStack) -> tuple[str, str, dict]:
    """The IdP and the demo app on free ports; returns (idp_url, rp_url, demo)."""
    idp_port, rp_port = free_port(), free_port()
    idp_url, rp_url = f"http://localhost:{idp_port}", f"http://localhost:{rp_port}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "IDP_ENV": "development",
        "IDP_INSTANCE_PATH": str(instance),
        "IDP_ISSUER": idp_url,
        "IDP_DEMO_RP_URL": rp_url,
        "IDP_TIME_ZONE": "Europe/Paris",
    }
    for name in ("IDP_DATABASE_URL", "IDP_REDIS_URL", "IDP_SECRET_KEY", "IDP_DATA_KEY"):
        env.pop(name, None)  # the embedded default, whatever the calling shell has set
    run(idp_command("db", "upgrade"), env)
    demo = json.loads(run(idp_command("seed-demo", "--json"), env))
    env |= {
        "DEMO_RP_CLIENT_ID": demo["client_id"],
        "DEMO_RP_CLIENT_SECRET": demo["client_secret"],
        "DEMO_RP_URL": rp_url,
    }
    idp = start(
        idp_command("serve", "--port", str(idp_port), "--workers", "1"),
        env,
        stack,
        instance / "idp.log",
    )
    rp = start(
        [sys.executable, "-m", "idp.demo_rp", "--port", str(rp_port)],
        env,
        stack,
        instance / "demo_rp.log",
    )
    wait_until_up(f"http://127.0.0.1:{idp_port}/healthz", idp)
    wait_until_up(f"http://127.0.0.1:{rp_port}/", rp)
    return idp_url, rp_url, demo


def new_page(browser, viewport: dict, *, mobile: bool = False):
    context = browser.new_context(
        viewport=viewport,
        device_scale_factor=2 if mobile else 1,
        is_mobile=mobile,
        has_touch=mobile,
        locale="fr-FR",
        timezone_id="Europe/Paris",
        extra_http_headers={"Accept-Language": "fr-FR,fr;q=0.9"},
        reduced_motion="reduce",
    )
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    return page


def shoot(page, out: Path, name: str) -> None:
    page.wait_for_load_state("networkidle")
    if page.locator("html").get_attribute("lang") != "fr":
        raise Failure(f"{name}: the page is not in French ({page.url})")
    page.screenshot(path=str(out / name), caret="hide", animations="disabled")
    print(f"  {name}", flush=True)


def expect_status(response, status: int, what: str) -> None:
    if response is None or response.status != status:
        got = response.status if response is not None else "no response"
        raise Failure(f"{what}: expected HTTP {status}, got {got}")


def authorize_url(idp_url: str, demo: dict, **overrides: str) -> str:
    """A request from the demo client. The consent page is reached with ``prompt=consent``
    whatever the client's setting; nothing is exchanged, so the PKCE challenge need only be
    well formed."""
    params = {
        "response_type": "code",
        "client_id": demo["client_id"],
        "redirect_uri": demo["redirect_uri"],
        "scope": "openid profile email rpps",
        "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
        **overrides,
    }
    return f"{idp_url}/authorize?{urlencode(params)}"


def walk(browser, idp_url: str, rp_url: str, demo: dict, out: Path) -> None:
    import pyotp

    # An error page, as a visitor sees it after following a link for an unknown application.
    page = new_page(browser, DESKTOP)
    unknown = authorize_url(idp_url, demo, client_id="inconnue")
    expect_status(page.goto(unknown), 400, "error page")
    page.locator(".error-reference").wait_for()
    shoot(page, out, "error.png")
    page.context.close()

    # The login page on a phone, from the demo app.
    phone = new_page(browser, MOBILE, mobile=True)
    phone.goto(rp_url)
    phone.get_by_role("link", name="Se connecter", exact=True).click()
    phone.locator("input[name='identifier']").wait_for()
    shoot(phone, out, "login-mobile.png")
    phone.context.close()

    # An application asking for a phishing-resistant level: the login page says so first.
    page = new_page(browser, DESKTOP)
    expect_status(page.goto(authorize_url(idp_url, demo, acr_values="phr")), 200, "step-up")
    page.locator("#requires-level-why").wait_for()
    shoot(page, out, "login-step-up.png")
    page.context.close()

    # The whole sign-in on a desktop, from the demo app and back.
    page = new_page(browser, DESKTOP)
    page.goto(rp_url)
    page.get_by_role("link", name="Se connecter", exact=True).click()
    page.locator("input[name='identifier']").wait_for()
    shoot(page, out, "login.png")
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.locator("form[action='/login'] button[type='submit']").click()
    page.locator("section.signing-in").wait_for()
    code = page.locator("input[name='code']")
    code.fill(pyotp.TOTP(demo["totp_secret"]).now())
    shoot(page, out, "login-code.png")
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.wait_for_url(f"{rp_url}/")
    page.get_by_text("Camille Martin").first.wait_for()
    shoot(page, out, "demo-app.png")

    expect_status(page.goto(f"{idp_url}/account"), 200, "account page")
    page.locator("h1").wait_for()
    shoot(page, out, "account.png")

    # Signed in with a code, asked for more: the short confirmation page, the session kept.
    confirm = page.goto(authorize_url(idp_url, demo, acr_values="phr"))
    expect_status(confirm, 200, "confirmation page")
    page.locator("#reauthenticate").wait_for()
    shoot(page, out, "confirm.png")

    expect_status(page.goto(authorize_url(idp_url, demo, prompt="consent")), 200, "consent page")
    page.locator("button[name='consent_decision'][value='approve']").wait_for()
    shoot(page, out, "consent.png")
    page.locator("button[name='consent_decision'][value='deny']").click()
    page.wait_for_url(f"{rp_url}/callback?*")
    page.get_by_role("alert").wait_for()
    shoot(page, out, "demo-app-error.png")
    page.context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("error: Playwright is needed (pip install playwright)", file=sys.stderr)
        return 2
    if not os.access(CHROMIUM_PATH, os.X_OK):
        print(f"error: no Chromium at {CHROMIUM_PATH} (apt-get install chromium)", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="idp-screenshots-") as tmp, ExitStack() as stack:
        instance = Path(tmp) / "instance"
        try:
            idp_url, rp_url, demo = start_servers(instance, stack)
            print(f"Screenshots into {out}:", flush=True)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
                )
                try:
                    walk(browser, idp_url, rp_url, demo, out)
                finally:
                    browser.close()
        except (Failure, PlaywrightError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            for log in sorted(instance.glob("*.log")):
                tail = log.read_text(errors="replace").splitlines()[-20:]
                print(f"--- {log.name} (last lines)", *tail, sep="\n", file=sys.stderr)
            return 1
    missing = [name for name in SHOTS if not (out / name).is_file()]
    if missing:
        print(f"error: not written: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"{len(SHOTS)} screenshots in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
