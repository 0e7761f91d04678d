"""Every error page a person sees says what happened and what to do, in the page's language,
carries a reference that support finds in the log (and in the audit trail when it interrupted
someone's sign-in), and leads somewhere:
back to the application only when its return address is registered for it, else to the
account page."""

from __future__ import annotations

import json
import logging
import re
from urllib.parse import urlencode

import pytest
import requests
from markupsafe import escape
from sqlalchemy import select

from idp.auth.error_pages import ALPHABET, REFERENCE_LENGTH
from idp.db import get_db
from idp.models import AuditEvent
from idp.oauth.messages import page_message
from tests.functional.test_authorization_requests import oauth_error_for, valid_params

REFERENCE = re.compile(rf"<code>([{ALPHABET}]{{{REFERENCE_LENGTH}}})</code>")


def reference_of(response: requests.Response) -> str:
    found = REFERENCE.findall(response.text)
    assert len(found) == 1, response.text
    return found[0]


def shown_events(live_server) -> list[dict]:
    with live_server.app.app_context():
        db = get_db()
        rows = db.execute(
            select(AuditEvent).where(AuditEvent.event == "site:error:shown")
        ).scalars()
        events = [json.loads(row.details_json) for row in rows]
        db.rollback()
    return events


def links(response: requests.Response) -> list[str]:
    content = response.text.split("<main", 1)[-1]
    return re.findall(r'<a href="([^"]*)"', content)


def get(live_server, path: str, params: dict | None = None) -> requests.Response:
    query = f"?{urlencode(params)}" if params else ""
    return requests.get(f"{live_server.url}{path}{query}", allow_redirects=False)


def assert_referenced(live_server, caplog, response, status: int, code: str) -> str:
    """In the log; anonymous, so not in the audit trail (it must not grow with anyone's asks)."""
    reference = reference_of(response)
    assert all(e["reference"] != reference for e in shown_events(live_server))
    logged = [r.getMessage() for r in caplog.records if reference in r.getMessage()]
    assert logged and f"status={status}" in logged[0] and f"code={code}" in logged[0]
    return reference


@pytest.mark.parametrize(
    ("overrides", "english", "code"),
    [
        (
            {"redirect_uri": "https://evil.example/cb"},
            "not registered for this client",
            "unregistered_redirect_uri",
        ),
        ({"client_id": "nobody"}, "does not exist on this server", "unknown_client"),
    ],
    ids=["unregistered-redirect-uri", "unknown-client"],
)
def test_an_authorization_error_page_in_french_has_our_message_a_reference_and_the_account_link(
    live_server, demo, caplog, overrides, english, code
):
    caplog.set_level(logging.INFO)
    params = {**valid_params(live_server, demo, **overrides), "lang": "fr"}
    response = get(live_server, "/authorize", params)
    assert response.status_code == 400 and "Location" not in response.headers
    assert 'lang="fr"' in response.text
    assert english not in response.text
    with live_server.app.test_request_context("/?lang=fr"):
        expected = str(escape(page_message(oauth_error_for(live_server, params))))
    assert expected in response.text
    assert_referenced(live_server, caplog, response, 400, code)
    # The return address is not registered (or the client unknown): never linked.
    assert links(response) == ["/account"]
    assert "evil.example" not in "".join(links(response))
    assert "/login" not in links(response)


def test_an_error_page_links_back_to_the_application_when_its_address_is_registered(
    live_server, demo, caplog
):
    """A repeated parameter is refused before Authlib validates the redirect URI: the page is
    shown, and the registered address leads back to the application."""
    params = list(valid_params(live_server, demo).items()) + [("scope", "openid")]
    response = requests.get(
        f"{live_server.url}/authorize?{urlencode(params)}", allow_redirects=False
    )
    assert response.status_code == 400 and "Location" not in response.headers
    assert_referenced(live_server, caplog, response, 400, "repeated_parameter")
    assert links(response) == ["http://localhost:9999/"]


def test_a_404_page_has_a_reference_and_leads_to_the_account_page(live_server, caplog):
    caplog.set_level(logging.INFO)
    response = get(live_server, "/no/such/page", {"lang": "fr"})
    assert response.status_code == 404
    assert_referenced(live_server, caplog, response, 404, "not_found")
    assert links(response) == ["/account"]
    assert "Traceback" not in response.text


def test_each_occurrence_gets_its_own_reference(live_server, caplog):
    first = reference_of(get(live_server, "/no/such/page"))
    second = reference_of(get(live_server, "/no/such/page"))
    assert first != second


def test_the_log_line_keeps_secrets_out_of_the_path(live_server, caplog):
    caplog.set_level(logging.INFO)
    response = get(live_server, "/enrol/SECRET-INVITATION-TOKEN")
    assert response.status_code == 404
    reference = reference_of(response)
    logged = " ".join(r.getMessage() for r in caplog.records if reference in r.getMessage())
    assert logged and "SECRET-INVITATION-TOKEN" not in logged


def test_a_csrf_failure_gets_the_same_page(live_server, caplog):
    caplog.set_level(logging.INFO)
    response = requests.post(f"{live_server.url}/login", data={"identifier": "x"})
    assert response.status_code == 400
    assert_referenced(live_server, caplog, response, 400, "csrf")
    assert links(response) == ["/account"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("DELETE", "/account", 405), ("GET", "/authorize", 400), ("GET", "/nowhere", 404)],
)
def test_no_error_page_is_a_500(live_server, method, path, status):
    response = requests.request(method, f"{live_server.url}{path}", allow_redirects=False)
    assert response.status_code == status
    reference_of(response)


def test_an_error_during_a_sign_in_is_in_the_audit_trail_on_that_practitioner(
    live_server, demo, clock, caplog
):
    from tests.support.oidc import UserAgent, totp_now

    caplog.set_level(logging.INFO)
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    params = {**valid_params(live_server, demo, client_id="nobody"), "lang": "fr"}
    response = agent.http.get(f"{live_server.url}/authorize?{urlencode(params)}")
    reference = reference_of(response)
    assert {"reference": reference, "status": 400, "code": "unknown_client"} in (
        shown_events(live_server)
    )
    with live_server.app.app_context():
        row = (
            get_db()
            .execute(select(AuditEvent).where(AuditEvent.event == "site:error:shown"))
            .scalar_one()
        )
        assert row.practitioner_id is not None
    assert any(reference in r.getMessage() for r in caplog.records)
