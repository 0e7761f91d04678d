"""The login page in a real Chromium: "Show password" (a progressive enhancement under the
strict CSP) and the remembered identifier."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser_page):
    """Fails on any script error or console error (a CSP violation is one)."""
    errors: list[str] = []
    browser_page.on("pageerror", lambda exc: errors.append(str(exc)))
    browser_page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    yield browser_page
    assert errors == []


def test_show_password_toggles_the_field_with_the_keyboard(page, live_server):
    page.goto(f"{live_server.url}/login?lang=en")
    password = page.locator("input[name='password']")
    toggle = page.locator("#password-toggle")
    toggle.wait_for(state="visible")  # shown by the script only
    assert toggle.get_attribute("type") == "button"
    assert toggle.get_attribute("aria-controls") == password.get_attribute("id")
    assert toggle.get_attribute("aria-pressed") == "false"
    assert toggle.inner_text() == "Show password"
    assert password.get_attribute("type") == "password"

    password.fill("A-long-enough-password")
    password.focus()
    page.keyboard.press("Tab")  # the button is next in the tab order
    assert page.evaluate("document.activeElement.id") == "password-toggle"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # the focus is visible
    page.keyboard.press("Enter")
    assert password.get_attribute("type") == "text"
    assert toggle.get_attribute("aria-pressed") == "true"
    assert toggle.inner_text() == "Hide password"
    assert password.input_value() == "A-long-enough-password"  # nothing lost
    page.keyboard.press("Space")
    assert password.get_attribute("type") == "password"
    assert toggle.get_attribute("aria-pressed") == "false"
    assert toggle.inner_text() == "Show password"

    toggle.click()
    assert password.get_attribute("type") == "text"
    # Sending the form hides the password again (the browser must not keep it as text).
    hidden_at_submit = page.evaluate(
        """() => {
            const form = document.querySelector("form[action='/login']");
            form.addEventListener("submit", (event) => event.preventDefault());
            form.requestSubmit();
            return document.querySelector("input[name='password']").type;
        }"""
    )
    assert hidden_at_submit == "password"
    assert toggle.get_attribute("aria-pressed") == "false"


def test_without_javascript_the_field_is_a_plain_password_field(chromium_browser, live_server):
    context = chromium_browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/login")
        assert page.locator("input[name='password']").get_attribute("type") == "password"
        assert page.locator("#password-toggle").count() == 1
        assert not page.locator("#password-toggle").is_visible()
    finally:
        context.close()


def test_remembered_identifier_is_filled_in_and_the_password_focused(page, live_server, demo):
    page.goto(f"{live_server.url}/login")
    page.fill("input[name='identifier']", demo["username"])
    page.fill("input[name='password']", demo["password"])
    page.check("input[name='remember']")
    page.locator("form[action='/login'] button[type='submit']").click()
    page.wait_for_url("**/login/totp")
    page.context.clear_cookies(name="idp_session")  # a new session, the same computer
    page.goto(f"{live_server.url}/login")
    assert page.locator("input[name='identifier']").input_value() == demo["username"]
    assert page.locator("input[name='remember']").is_checked()
    assert page.evaluate("document.activeElement.name") == "password"
    page.click("#forget-identifier")
    page.wait_for_url("**/login")
    assert page.locator("input[name='identifier']").input_value() == ""
    assert not page.locator("input[name='remember']").is_checked()
    assert page.evaluate("document.activeElement.name") == "identifier"
