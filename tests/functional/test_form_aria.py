"""One way to show a field's error: aria-describedby only names elements that exist, aria-invalid
only while an error stands, and a wrong code is not left in its field."""

from __future__ import annotations

from html.parser import HTMLParser

from tests.support.oidc import UserAgent


class Fields(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.inputs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        if tag in ("input", "textarea", "select") and attributes.get("type") != "hidden":
            self.inputs.append(attributes)


def fields_of(html: str) -> Fields:
    parsed = Fields()
    parsed.feed(html)
    return parsed


def dangling_references(html: str) -> list[str]:
    parsed = fields_of(html)
    return [
        f"{field.get('name')} -> {ref}"
        for field in parsed.inputs
        for ref in (field.get("aria-describedby") or "").split()
        if ref not in parsed.ids
    ]


def invalid(html: str) -> list[str]:
    return [f.get("name") for f in fields_of(html).inputs if f.get("aria-invalid") == "true"]


def test_a_fresh_login_form_claims_no_error(live_server, demo):
    page = UserAgent(live_server.url).get("/login")
    assert dangling_references(page.text) == [] and invalid(page.text) == []


def test_an_empty_submission_marks_exactly_the_fields_in_error(live_server, demo):
    agent = UserAgent(live_server.url)
    page = agent.get("/login")
    refused = agent.post("/login", {"identifier": demo["username"], "password": ""}, page.text)
    assert refused.status_code == 400
    assert invalid(refused.text) == ["password"]
    assert dangling_references(refused.text) == []
    described = [f for f in fields_of(refused.text).inputs if f.get("name") == "password"]
    assert described[0]["aria-describedby"] == "password-errors"


def test_a_wrong_code_is_marked_and_cleared(live_server, demo):
    agent = UserAgent(live_server.url)
    page = agent.login_password(demo["username"], demo["password"])
    assert page.url.endswith("/login/totp") and invalid(page.text) == []
    refused = agent.submit_totp("000000", page)
    assert refused.status_code == 401
    assert dangling_references(refused.text) == []
    [code] = [f for f in fields_of(refused.text).inputs if f.get("name") == "code"]
    assert code.get("value") in (None, "")  # typed again, not corrected
