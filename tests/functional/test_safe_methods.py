"""A GET only reads: any site can make a browser send one (a link, an image), so every change
of state is a POST with a CSRF token, and the few GETs that write say so in their policy."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import func, select

from idp.auth.policy import endpoint_get_changes_state
from idp.crypto import hash_token
from idp.db import get_db
from idp.models import Base, WebSession
from tests.support.inprocess import (  # every_feature_*: this module's app and demo fixtures
    Browser,
    every_feature_app,  # noqa: F401
    every_feature_demo,  # noqa: F401
    login_states,
)

PLAUSIBLE = {"int": "1", "path": "css/idp.css", "default": "ABCD-EFGH"}
KEPT_BY_THE_POLICY = {"next"}
"""Where to come back after the login page the access policy sends an anonymous GET to."""


def get_rules(app):
    return [rule for rule in app.url_map.iter_rules() if "GET" in (rule.methods or ())]


def plausible_url(rule) -> str:
    kinds = {"IntegerConverter": "int", "PathConverter": "path"}
    url = rule.rule
    for name, converter in rule._converters.items():  # noqa: SLF001
        value = PLAUSIBLE[kinds.get(type(converter).__name__, "default")]
        url = re.sub(rf"<[^>]*\b{name}>", value, url)
    return url


def snapshot(app, sid: str) -> dict:
    """Every table's row count and the session as stored, but for its last-seen time."""
    with app.app_context():
        db = get_db()
        counts = {
            table.name: db.execute(select(func.count()).select_from(table)).scalar_one()
            for table in Base.metadata.sorted_tables
        }
        row = db.get(WebSession, hash_token(sid))
        stored = None
        if row is not None:
            stored = {
                "created_at": row.created_at,
                "practitioner_id": row.practitioner_id,
                "data": json.loads(row.data),
            }
        db.rollback()
    return {"rows": counts, "session": stored}


def test_every_get_route_declares_whether_it_changes_state(app):
    undeclared = [
        rule.rule
        for rule in get_rules(app)
        if endpoint_get_changes_state(app, rule.endpoint) is None
    ]
    assert undeclared == []


@pytest.mark.parametrize("state_name", ["logged-in", "first-factor"])
def test_get_routes_not_declared_as_changing_state_change_nothing(app, demo, clock, state_name):
    """Signed in with a pending authorization request, each GET leaves the session (but for
    its last-seen time) and every table exactly as they were. After the password only, the
    same, but for the return address the policy keeps when it sends a GET to the login."""
    browser = Browser(app, login_states(app, demo, clock)[state_name])
    allowed = KEPT_BY_THE_POLICY if state_name == "first-factor" else set()
    checked, changed = [], []
    for rule in get_rules(app):
        if endpoint_get_changes_state(app, rule.endpoint) is not False:
            continue
        url = plausible_url(rule)
        browser.reset()
        before = snapshot(app, browser.sid)
        status = browser.open("GET", url, reset=False)
        after = snapshot(app, browser.sid)
        checked.append(url)
        for kept in (before, after):
            for key in allowed:
                (kept["session"] or {}).get("data", {}).pop(key, None)
        if after != before:
            changed.append(f"GET {url} ({status}): {describe(before, after)}")
    assert not changed, "\n".join(changed)
    assert {"/account", "/account/totp/add", "/logout"} <= set(checked)


def describe(before: dict, after: dict) -> str:
    rows = {
        table: (count, after["rows"][table])
        for table, count in before["rows"].items()
        if after["rows"][table] != count
    }
    session = "session changed" if before["session"] != after["session"] else ""
    if before["session"] and after["session"]:
        old, new = before["session"]["data"], after["session"]["data"]
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        session = f"session keys {keys}" if keys else session
    return f"rows {rows} {session}".strip()
