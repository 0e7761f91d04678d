"""Accessibility in a real Chromium: the axe-core scan itself, focus rings and input borders
with enough contrast, no layout shift nor sideways scrolling on a phone.

Every browser test's pages are scanned by axe-core (tests.support.browser.browser_page); the
first tests here prove that scan finds what it should, so it cannot pass by scanning nothing.
"""

from __future__ import annotations

import pytest

from tests.support.browser import (
    AccessibilityScan,
    install_accessibility_scan,
    scan_origin,
    serve_wsgi_app,
)

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


def pages(environ, start_response):
    body = {"/broken": BROKEN, "/bounce": BOUNCE}.get(environ["PATH_INFO"], CLEAN)
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
