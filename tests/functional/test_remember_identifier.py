""" "Remember my identifier on this computer": the RPPS number in a cookie, nothing else; the
login page fills it in, an invalid cookie is ignored, and it can always be forgotten."""

from __future__ import annotations

import re

import pytest
import requests

from idp.auth.remember import COOKIE_MAX_AGE
from idp.db import dispose as dispose_app
from tests.support.idp_server import build_app
from tests.support.oidc import RelyingParty, UserAgent, csrf_token

REDIRECT = "http://localhost:9999/callback"
COOKIE = "idp_identifier"


def set_cookie_headers(response) -> list[str]:
    """Every Set-Cookie header of a requests response (requests folds them into one)."""
    return response.raw.headers.getlist("Set-Cookie")


def identifier_cookies(response) -> list[str]:
    return [c for c in set_cookie_headers(response) if c.startswith(COOKIE + "=")]


def plant(agent: UserAgent, value: str) -> None:
    """A cookie as the browser would send it back (http.cookiejar files localhost so)."""
    agent.http.cookies.set(COOKIE, value, domain="localhost.local", path="/")


def password_step(agent: UserAgent, identifier: str, password: str, *, remember: bool):
    """The password form as a browser sends it; the raw answer (a 303 when it succeeds)."""
    page = agent.get("/login")
    data = {"csrf_token": csrf_token(page.text), "identifier": identifier, "password": password}
    if remember:
        data["remember"] = "y"
    return agent.http.post(f"{agent.base}/login", data=data, allow_redirects=False)


def input_value(html: str, name: str) -> str | None:
    tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
    assert tag, f"no input {name}"
    value = re.search(r'value="([^"]*)"', tag.group(0))
    return value.group(1) if value and value.group(1) else None  # None: empty


def input_tag(html: str, name: str) -> str:
    tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
    assert tag, f"no input {name}"
    return tag.group(0)


def is_checked(html: str) -> bool:
    return re.search(r"\bchecked\b", input_tag(html, "remember")) is not None


def test_ticked_box_remembers_the_rpps_number_and_nothing_else(live_server, demo):
    agent = UserAgent(live_server.url)
    # Signed in with the email address: the cookie still holds the RPPS number only.
    response = password_step(agent, demo["email"], demo["password"], remember=True)
    assert response.status_code == 303
    [cookie] = identifier_cookies(response)
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0] == f"{COOKIE}={demo['username']}"
    assert f"Max-Age={COOKIE_MAX_AGE}" in attributes and COOKIE_MAX_AGE == 180 * 24 * 3600
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= set(attributes)
    assert "Secure" not in attributes  # http here; see the https test below
    every_cookie = " ".join(set_cookie_headers(response))
    assert demo["password"] not in every_cookie and demo["email"] not in every_cookie
    assert agent.http.cookies.get(COOKIE) == demo["username"]


def test_login_page_fills_in_the_remembered_identifier_and_focuses_the_password(live_server, demo):
    agent = UserAgent(live_server.url)
    password_step(agent, demo["username"], demo["password"], remember=True)
    agent.http.cookies.pop("idp_session")  # another day: a new session, the same computer
    page = agent.get("/login")
    assert input_value(page.text, "identifier") == demo["username"]
    assert is_checked(page.text)
    assert "autofocus" in input_tag(page.text, "password")
    assert "autofocus" not in input_tag(page.text, "identifier")
    assert 'id="forget-identifier"' in page.text


def test_a_login_hint_wins_over_the_remembered_identifier(live_server, demo):
    agent = UserAgent(live_server.url)
    password_step(agent, demo["username"], demo["password"], remember=True)
    rp = RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)
    page = agent.get(rp.authorization_url(login_hint="10000000017", prompt="login"))
    assert page.url.endswith("/login")
    assert input_value(page.text, "identifier") == "10000000017"
    assert not is_checked(page.text)  # ticking it again is the other person's choice
    assert 'id="forget-identifier"' not in page.text


@pytest.mark.parametrize(
    "value",
    ["1000000000", "100000000090", "1000000000x", "camille.martin@demo.sante.fr", '"><b>x</b>'],
)
def test_an_invalid_cookie_is_ignored(live_server, demo, value):
    page = requests.get(f"{live_server.url}/login", headers={"Cookie": f"{COOKIE}={value}"})
    assert page.status_code == 200
    assert input_value(page.text, "identifier") is None
    assert not is_checked(page.text)
    assert 'id="forget-identifier"' not in page.text
    assert "<b>x</b>" not in page.text


def test_a_wrong_password_remembers_nothing(live_server, demo):
    agent = UserAgent(live_server.url)
    response = password_step(agent, demo["username"], "not the password", remember=True)
    assert response.status_code == 401
    assert identifier_cookies(response) == []
    assert agent.http.cookies.get(COOKIE) is None


def test_a_successful_password_with_the_box_clear_forgets_it(live_server, demo):
    agent = UserAgent(live_server.url)
    password_step(agent, demo["username"], demo["password"], remember=True)
    assert agent.http.cookies.get(COOKIE) == demo["username"]
    response = password_step(agent, demo["username"], demo["password"], remember=False)
    assert response.status_code == 303
    [deleted] = identifier_cookies(response)
    assert "Max-Age=0" in deleted or "expires=Thu, 01 Jan 1970" in deleted
    assert agent.http.cookies.get(COOKIE) is None
    page = agent.get("/login")
    assert input_value(page.text, "identifier") is None and not is_checked(page.text)


def test_a_password_step_without_the_box_and_without_a_cookie_sets_nothing(live_server, demo):
    agent = UserAgent(live_server.url)
    response = password_step(agent, demo["username"], demo["password"], remember=False)
    assert response.status_code == 303 and identifier_cookies(response) == []


def test_forget_this_identifier_deletes_the_cookie(live_server, demo):
    agent = UserAgent(live_server.url)
    password_step(agent, demo["username"], demo["password"], remember=True)
    page = agent.get("/login")
    # A state change: POST with the CSRF token only.
    assert agent.http.get(f"{live_server.url}/login/forget").status_code == 405
    forged = agent.http.post(f"{live_server.url}/login/forget", allow_redirects=False)
    assert forged.status_code == 400 and agent.http.cookies.get(COOKIE) == demo["username"]
    response = agent.http.post(
        f"{live_server.url}/login/forget",
        data={"csrf_token": csrf_token(page.text)},
        allow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["Location"].endswith("/login")
    assert agent.http.cookies.get(COOKIE) is None
    page = agent.get("/login")
    assert input_value(page.text, "identifier") is None and not is_checked(page.text)


def test_not_you_forgets_the_identifier_of_the_person_it_names(live_server, demo):
    agent = UserAgent(live_server.url)
    password_step(agent, demo["username"], demo["password"], remember=True)
    page = agent.get("/login/totp")
    assert 'id="not-you"' in page.text
    back = agent.post("/login/restart", {}, page.text)
    assert back.url.endswith("/login")
    assert agent.http.cookies.get(COOKIE) is None
    assert input_value(back.text, "identifier") is None


def test_not_you_keeps_the_identifier_of_someone_else(live_server, demo):
    agent = UserAgent(live_server.url)
    password_step(agent, demo["username"], demo["password"], remember=False)
    plant(agent, "10000000017")  # remembered before, for someone else
    page = agent.get("/login/totp")
    back = agent.post("/login/restart", {}, page.text)
    assert back.url.endswith("/login")
    assert input_value(back.text, "identifier") == "10000000017"


def test_under_https_the_cookie_is_host_prefixed_and_secure(database_url, tmp_path, clock):
    from idp.demo import seed

    app = build_app(database_url, tmp_path, clock, issuer="https://idp.example")
    with app.app_context():
        demo = seed(rp_url="http://localhost:9999")
    browser = app.test_client()
    page = browser.get("/login", base_url="https://idp.example")
    response = browser.post(
        "/login",
        base_url="https://idp.example",
        data={
            "csrf_token": csrf_token(page.text),
            "identifier": demo["username"],
            "password": demo["password"],
            "remember": "y",
        },
        headers={"Referer": "https://idp.example/login"},
    )
    assert response.status_code == 303
    [cookie] = [
        c for c in response.headers.getlist("Set-Cookie") if c.startswith("__Host-idp_identifier=")
    ]
    attributes = [part.strip() for part in cookie.split(";")]
    assert attributes[0] == f"__Host-idp_identifier={demo['username']}"
    assert {"Secure", "HttpOnly", "SameSite=Lax", "Path=/"} <= set(attributes)
    assert not any(a.lower().startswith("domain=") for a in attributes)
    again = browser.get("/login", base_url="https://idp.example")
    assert input_value(again.get_data(as_text=True), "identifier") == demo["username"]
    dispose_app(app)
