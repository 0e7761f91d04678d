"""Accessibility in a real Chromium: the axe-core scan itself, focus rings and input borders
with enough contrast, no layout shift nor sideways scrolling on a phone.

Every browser test's pages are scanned by axe-core (tests.support.browser.browser_page); the
first tests here prove that scan finds what it should, so it cannot pass by scanning nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.support.browser import (
    AccessibilityScan,
    install_accessibility_scan,
    scan_origin,
    scanned_page,
    serve_wsgi_app,
)
from tests.support.oidc import RelyingParty, totp_now

pytestmark = pytest.mark.browser

BROKEN = (
    b"<!doctype html><html lang='en'><head><title>broken</title></head><body><main>"
    b"<h1>Broken</h1><img src='data:image/gif;base64,R0lGODlhAQABAAAAACw='>"
    b"<form><input type='text' name='q'></form><button id='more'>More</button>"
    b"<div id='later'></div><a href='/clean' id='away'>away</a></main>"
    b"<script>document.getElementById('more').onclick = () => {"
    b" document.getElementById('later').innerHTML = '<select name=s><option>x</option></select>';"
    b" };</script></body></html>"
)
CLEAN = (
    b"<!doctype html><html lang='en'><head><title>clean</title></head><body><main>"
    b"<h1>Clean</h1><p>Nothing wrong here.</p></main></body></html>"
)
BOUNCE = (
    b"<!doctype html><html lang='en'><head><title>bounce</title></head><body><main>"
    b"<h1>Bounce</h1><img src='data:image/gif;base64,R0lGODlhAQABAAAAACw='></main>"
    b"<script>addEventListener('load', () => location.replace('/clean'));</script></body></html>"
)


FAINT = (
    b"<!doctype html><html lang='en'><head><title>faint</title><style>"
    b"body{background:#fff} button:focus{outline:2px solid #ddd}"
    b" input{border:1px solid #ccc} input:focus{outline:3px solid #000}</style></head>"
    b"<body><main><h1>Faint</h1><label>Name <input name='n'></label><button>Go</button>"
    b"</main></body></html>"
)
SHIFTING = (
    b"<!doctype html><html lang='en'><head><meta name='viewport' content='width=device-width'>"
    b"<title>shifting</title></head><body><main><h1>Shifting</h1><p id='late'></p>"
    b"<p style='height:400px;background:#eee'>Content pushed down.</p></main><script>"
    b"addEventListener('load', () => setTimeout(() => {"
    b" document.getElementById('late').style.height = '200px'; }, 200));"
    b"</script></body></html>"
)
WIDE = (
    b"<!doctype html><html lang='en'><head><meta name='viewport' content='width=device-width'>"
    b"<title>wide</title></head><body><main><h1>Wide</h1>"
    b"<div style='width:600px'>too wide</div></main></body></html>"
)


def pages(environ, start_response):
    body = {
        "/broken": BROKEN,
        "/bounce": BOUNCE,
        "/faint": FAINT,
        "/shifting": SHIFTING,
        "/wide": WIDE,
    }.get(environ["PATH_INFO"], CLEAN)
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [body]


@pytest.fixture
def site():
    url, stop = serve_wsgi_app(pages)
    yield url
    stop()


@pytest.fixture
def scanned(chromium_browser):
    context = chromium_browser.new_context()
    scan = install_accessibility_scan(context)
    assert scan.enabled, "axe-core is not installed (make install-test)"
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page, scan
    context.close()


def wait_for_scan(page, scan: AccessibilityScan, reason_url: str) -> None:
    for _ in range(200):  # reports arrive while Playwright waits
        if reason_url in scan.scans:
            return
        page.wait_for_timeout(25)
    raise AssertionError(f"no scan {reason_url!r}: {scan.scans}")


def rules(scan: AccessibilityScan) -> set[tuple[str, str]]:
    return {(v["id"], v["url"].rsplit("/", 1)[1]) for v in scan.violations}


def test_scan_reports_serious_violations_with_page_and_elements(scanned, site):
    page, scan = scanned
    unscan = scan_origin(site)
    try:
        page.goto(f"{site}/broken")
        scan.finish()
    finally:
        unscan()

    assert {("image-alt", "broken"), ("label", "broken")} <= rules(scan)
    assert scan.scans == [f"load {site}/broken", f"end {site}/broken"]
    image = next(v for v in scan.violations if v["id"] == "image-alt")
    assert image["impact"] == "critical" and image["targets"] == ["img"]
    assert image["url"] == f"{site}/broken"
    [line] = [p for p in scan.problems() if p.startswith("image-alt")]
    assert line.startswith(f"image-alt (critical) on {site}/broken: img - ")
    with pytest.raises(pytest.fail.Exception, match="image-alt"):
        scan.fail_on_violations()


def test_content_shown_after_load_is_scanned_before_the_page_is_left(scanned, site):
    page, scan = scanned
    unscan = scan_origin(site)
    try:
        page.goto(f"{site}/broken")
        page.click("#more")  # an unlabelled <select> appears
        wait_for_scan(page, scan, f"change {site}/broken")
        page.click("#away")
        page.wait_for_url("**/clean")
        scan.finish()
    finally:
        unscan()

    selects = [v for v in scan.violations if "select" in v["targets"]]
    assert selects and {v["url"].rsplit("/", 1)[1] for v in selects} == {"broken"}
    assert f"end {site}/clean" in scan.scans


def test_a_page_leaving_during_its_scan_does_not_break_the_test(scanned, site):
    page, scan = scanned
    unscan = scan_origin(site)
    try:
        page.goto(f"{site}/bounce")
        page.wait_for_url("**/clean")
        scan.finish()
    finally:
        unscan()

    assert f"end {site}/clean" in scan.scans
    assert scan.errors == []


def test_pages_of_other_origins_are_not_scanned(scanned, site):
    page, scan = scanned
    page.goto(f"{site}/broken")
    scan.finish()

    assert scan.scans == [] and scan.violations == []


# --------------------------------------------------------------------------- the IdP's pages


def sign_in_to_second_step(page, live_server, demo) -> None:
    page.goto(f"{live_server.url}/login")
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.locator("form[action='/login'] button[type='submit']").click()
    page.wait_for_url("**/login/totp")


def finish_second_step(page, demo, clock) -> None:
    page.fill("input[name='code']", totp_now(demo["totp_secret"], clock))
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.wait_for_url("**/account")


def consent_url(live_server) -> str:
    """An authorization request from a client that asks for consent."""
    from idp.db import get_db
    from idp.oauth import clients

    redirect_uri = "http://localhost:9999/consent-callback"
    with live_server.app.app_context():
        client, secret = clients.register_client(
            get_db(), name="Dossier patient", redirect_uris=[redirect_uri], require_consent=True
        )
        client_id = client.client_id
    return RelyingParty(live_server.url, client_id, secret, redirect_uri).authorization_url()


def main_pages(page, live_server, demo, clock) -> Iterator[str]:
    """Walk the main pages, yielding each one's name once it is shown."""
    page.goto(f"{live_server.url}/login")
    yield "login"
    sign_in_to_second_step(page, live_server, demo)
    yield "second step (TOTP)"
    page.fill(
        "input[name='code']",
        "000000" if totp_now(demo["totp_secret"], clock) != "000000" else "111111",
    )
    page.locator("form[action='/login/totp'] button[type='submit']").click()
    page.locator("input[name='code'][aria-invalid='true'], p.alert").first.wait_for()
    yield "second step, wrong code"
    finish_second_step(page, demo, clock)
    yield "account"
    page.locator("form[action='/account/totp/add'] button").click()
    page.locator("img.qr").wait_for()
    yield "authenticator app setup"
    page.goto(consent_url(live_server))
    page.locator("button[name='consent_decision'][value='approve']").wait_for()
    yield "consent"
    page.goto(f"{live_server.url}/no-such-page")
    page.locator("p.alert[role='alert']").wait_for()
    yield "error"
    page.goto(f"{live_server.url}/logout")
    yield "sign out"
    page.locator("form[action='/logout'] button").click()
    page.wait_for_url("**/logout*")
    page.locator("main a[href='/login']").wait_for()
    yield "signed out"


MAIN_PAGES = [
    "login",
    "second step (TOTP)",
    "second step, wrong code",
    "account",
    "authenticator app setup",
    "consent",
    "error",
    "sign out",
    "signed out",
]


# --------------------------------------------------------------------------- contrast

Rgba = tuple[float, float, float, float]


def parse_colour(css: str) -> Rgba:
    """A computed colour, ``rgb(r, g, b)`` or ``rgba(r, g, b, a)``."""
    match = re.fullmatch(r"rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)", css)
    assert match, f"unexpected computed colour {css!r}"
    r, g, b, a = match.groups()
    return float(r), float(g), float(b), 1.0 if a is None else float(a)


def over(top: Rgba, below: Rgba) -> Rgba:
    """``top`` painted over the opaque ``below``."""
    a = top[3]
    return (*(a * t + (1 - a) * u for t, u in zip(top[:3], below[:3], strict=True)), 1.0)


def flatten(layers: list[str]) -> Rgba:
    """Background colours from the nearest element outwards, over a white canvas."""
    colour: Rgba = (255.0, 255.0, 255.0, 1.0)
    for layer in reversed(layers):
        colour = over(parse_colour(layer), colour)
    return colour


def luminance(colour: Rgba) -> float:
    """WCAG 2.x relative luminance of an opaque sRGB colour."""

    def linear(channel: float) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(c) for c in colour[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(one: Rgba, other: Rgba) -> float:
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_contrast_ratio_matches_wcag_examples():
    black, white = (0.0, 0.0, 0.0, 1.0), (255.0, 255.0, 255.0, 1.0)
    assert contrast(black, white) == pytest.approx(21)
    assert contrast(parse_colour("rgb(118, 118, 118)"), white) == pytest.approx(4.54, abs=0.01)
    assert contrast(flatten(["rgba(0, 0, 0, 0)", "rgb(244, 247, 250)"]), white) < 1.1
    assert flatten(["rgba(0, 0, 0, 0.5)"])[:3] == pytest.approx((127.5, 127.5, 127.5))


# Background layers behind an element (or behind its outline, drawn outside the element when
# outline-offset >= 0): the computed background colours outwards, up to the first opaque one.
_BACKGROUNDS = """
(start) => {
  const layers = [];
  for (let node = start; node; node = node.parentElement) {
    const colour = getComputedStyle(node).backgroundColor;
    layers.push(colour);
    const alpha = colour.match(/rgba\\(.*,\\s*([\\d.]+)\\)/);
    if (!alpha || parseFloat(alpha[1]) === 1) break;
  }
  return layers;
}
"""

_FOCUSED = (
    """
() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  window.__seenFocus = window.__seenFocus || new Set();
  if (window.__seenFocus.has(el)) return {repeat: true};
  window.__seenFocus.add(el);
  const backgrounds = """
    + _BACKGROUNDS
    + """;
  const style = getComputedStyle(el);
  const offset = parseFloat(style.outlineOffset) || 0;
  return {
    element: el.outerHTML.slice(0, 120),
    focusVisible: el.matches(":focus-visible"),
    outlineStyle: style.outlineStyle,
    outlineWidth: parseFloat(style.outlineWidth) || 0,
    outlineColour: style.outlineColor,
    boxShadow: style.boxShadow,
    behind: backgrounds(offset < 0 ? el : el.parentElement),
  };
}
"""
)

_INPUT_BORDERS = (
    """
() => {
  const backgrounds = """
    + _BACKGROUNDS
    + """;
  return [...document.querySelectorAll("input, select, textarea")]
    // Check boxes and radio buttons are drawn by the browser itself (no CSS border).
    .filter((el) => !["hidden", "checkbox", "radio"].includes(el.type))
    .filter((el) => el.getClientRects().length)
    .map((el) => ({
      element: el.outerHTML.slice(0, 120),
      border: getComputedStyle(el).borderTopColor,
      width: parseFloat(getComputedStyle(el).borderTopWidth) || 0,
      behind: backgrounds(el.parentElement),
      inside: backgrounds(el),
    }));
}
"""
)


def ring_colour(focused: dict) -> str:
    """The focus indicator's colour: the outline, or a box-shadow ring when there is none."""
    if focused["outlineStyle"] != "none" and focused["outlineWidth"] >= 2:
        return focused["outlineColour"]
    shadow = re.match(r"(rgba?\([^)]*\))", focused["boxShadow"] or "")
    assert shadow, f"no focus ring (outline or box-shadow) on {focused['element']}"
    return shadow.group(1)


def focus_problems(page, name: str) -> list[str]:
    """Tab through the page; every element focused must show a ring of 3:1 or more."""
    problems, seen = [], 0
    page.evaluate("() => { window.__seenFocus = new Set(); }")
    for _ in range(60):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        if focused is None:
            continue  # between the page and the browser's own controls
        if focused.get("repeat"):
            break
        seen += 1
        if not focused["focusVisible"]:
            problems.append(f"{name}: {focused['element']} is not :focus-visible after Tab")
            continue
        ratio = contrast(parse_colour(ring_colour(focused)), flatten(focused["behind"]))
        if ratio < 3:
            problems.append(f"{name}: focus ring {ratio:.2f}:1 on {focused['element']}")
    else:
        problems.append(f"{name}: Tab never came back to the first element")
    if seen < 2:
        problems.append(f"{name}: only {seen} element(s) reached with Tab")
    return problems


def border_problems(page, name: str) -> list[str]:
    problems = []
    for field in page.evaluate(_INPUT_BORDERS):
        border = parse_colour(field["border"])
        for side in ("behind", "inside"):
            ratio = contrast(over(border, flatten(field[side])), flatten(field[side]))
            if field["width"] < 1 or ratio < 3:
                problems.append(f"{name}: input border {ratio:.2f}:1 ({side}) {field['element']}")
    return problems


def test_faint_focus_rings_and_borders_are_reported(scanned, site):
    page, _scan = scanned  # another origin: not scanned by axe-core
    page.goto(f"{site}/faint")

    focus, borders = focus_problems(page, "faint"), border_problems(page, "faint")

    assert [p.split(" on ")[0] for p in focus] == ["faint: focus ring 1.36:1"]
    assert "<button>Go</button>" in focus[0]
    assert [p.split(" (")[0] for p in borders] == ["faint: input border 1.61:1"] * 2


def test_focus_rings_and_input_borders_stand_out(browser_page, live_server, demo, clock):
    """WCAG 2.2 SC 1.4.11 and 2.4.13: a focus ring, and an input's border, of 3:1 or more
    against what surrounds them, on each element reached with the keyboard."""
    page, problems, visited = browser_page, [], []
    for name in main_pages(page, live_server, demo, clock):
        visited.append(name)
        problems += focus_problems(page, name)
        problems += border_problems(page, name)
    assert visited == MAIN_PAGES
    assert problems == []


# --------------------------------------------------------------------------- mobile layout

PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
# web.dev's "good" Cumulative Layout Shift is 0.1 or less; we ask for less than 0.1.
CLS_LIMIT = 0.1

# Every layout shift of the document so far (buffered), summed: an upper bound of CLS (which
# takes the worst window of shifts). Read after two animation frames so that what the last
# frame laid out has been reported. hadRecentInput is not looked at: under Chromium's mobile
# emulation every shift says it had recent input, and nothing is typed into the page measured.
_LAYOUT = """
() => new Promise((resolve) => {
  let total = 0;
  const shifts = [];
  const add = (entries) => {
    for (const e of entries) {
      total += e.value;
      shifts.push({value: e.value, sources: (e.sources || []).map((s) =>
        s.node ? (s.node.outerHTML || s.node.nodeName).slice(0, 80) : "?")});
    }
  };
  const observer = new PerformanceObserver((list) => add(list.getEntries()));
  observer.observe({type: "layout-shift", buffered: true});
  requestAnimationFrame(() => requestAnimationFrame(() => {
    add(observer.takeRecords());
    observer.disconnect();
    const root = document.documentElement;
    resolve({cls: total, shifts, scrollWidth: root.scrollWidth,
              innerWidth: window.innerWidth, clientWidth: root.clientWidth});
  }));
})
"""


def layout_problems(page, name: str) -> list[str]:
    page.wait_for_load_state("networkidle")
    layout = page.evaluate(_LAYOUT)
    width = page.viewport_size["width"]  # a zoomed-out phone widens innerWidth to the content
    problems = []
    if layout["cls"] >= CLS_LIMIT:
        problems.append(f"{name}: layout shift {layout['cls']:.3f} {layout['shifts']}")
    widest = max(layout["scrollWidth"], layout["innerWidth"])
    if widest > width:
        problems.append(f"{name}: {widest}px wide in a {width}px viewport")
    return problems


@pytest.mark.parametrize(
    ("path", "expected"), [("shifting", "layout shift 0."), ("wide", "608px wide in a 390px")]
)
def test_shifting_or_too_wide_page_is_reported(chromium_browser, site, path, expected):
    context = chromium_browser.new_context(**PHONE)
    try:
        page = context.new_page()
        page.goto(f"{site}/{path}")
        if path == "shifting":
            page.wait_for_function("() => document.getElementById('late').style.height")

        problems = layout_problems(page, path)
    finally:
        context.close()

    assert [p.split(": ", 1)[1][: len(expected)] for p in problems] == [expected]


def test_no_layout_shift_nor_sideways_scroll_on_a_phone(chromium_browser, live_server, demo, clock):
    problems, visited = [], []
    with scanned_page(chromium_browser, **PHONE) as page:
        for name in main_pages(page, live_server, demo, clock):
            visited.append(name)
            problems += layout_problems(page, name)
    assert visited == MAIN_PAGES
    assert problems == []


@pytest.fixture
def card_server(database_url, tmp_path, clock, card_pki, crl_server):
    """A live IdP that offers the CPS card, with no agent running on this computer."""
    from idp.db import dispose as dispose_app
    from idp.demo import seed
    from tests.support.cardlogin import make_card_trust, serve_fresh_crls
    from tests.support.idp_server import LiveServer, build_app
    from tests.support.nginx import free_port

    serve_fresh_crls(crl_server, card_pki, now=clock.now())
    app = build_app(database_url, tmp_path, clock, smartcard=make_card_trust(card_pki))
    server = LiveServer(app)
    app.extensions["idp.settings"].smartcard_bridge_port = free_port()
    with app.app_context():
        seed(rp_url="http://localhost:9999")
    yield server
    server.stop()
    dispose_app(app)


def test_card_page_keeps_still_on_a_phone_when_the_agent_is_missing(chromium_browser, card_server):
    """The hint that the agent is not running appears once the page has asked for it."""
    with scanned_page(chromium_browser, **PHONE) as page:
        page.goto(f"{card_server.url}/login")
        page.locator("#card-login-link").click()
        page.wait_for_url("**/login/card")
        page.locator("[data-smartcard-agent-hint]").wait_for(state="visible")
        assert layout_problems(page, "card login") == []
