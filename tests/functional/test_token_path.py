"""The token path's caches and costs: discovery and the JWKS from memory with an ETag, signing
keys refreshed on the key table's stamp, clients cached for a few seconds, and the statements
a code exchange and a UserInfo call run."""

from __future__ import annotations

import base64
import collections
import datetime as dt
import json

import pytest
import requests
from sqlalchemy import create_engine, event, text
from sqlalchemy.orm import Session

from idp.db import get_db, normalise_url
from idp.models import OAuthClient
from idp.oauth import keys
from idp.oauth.clients import CLIENT_CACHE_SECONDS
from idp.oauth.server import AuthorizationCodeGrant
from idp.services import cipher
from tests.functional.test_oidc_flow import full_login

DOCUMENTS = ("/.well-known/openid-configuration", "/jwks.json")


@pytest.mark.parametrize("path", DOCUMENTS)
def test_documents_carry_an_etag_and_a_client_holding_it_gets_304(live_server, demo, path):
    first = requests.get(live_server.url + path)
    assert first.status_code == 200 and first.json()
    assert first.headers["Cache-Control"] == "public, max-age=300"
    etag = first.headers["ETag"]
    assert etag.startswith('"') and len(etag) == 34
    again = requests.get(live_server.url + path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag
    other = requests.get(live_server.url + path, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.content == first.content


def jwks_kids(live_server) -> tuple[str, set[str]]:
    response = requests.get(live_server.url + "/jwks.json")
    return response.headers["ETag"], {key["kid"] for key in response.json()["keys"]}


def id_token_kid(live_server, demo, clock) -> str:
    clock.advance(30)  # a new TOTP step
    rp, _agent, location = full_login(live_server, demo, clock)
    header = rp.exchange(location)["id_token"].split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]


def rotate_elsewhere(app, monkeypatch) -> list[str]:
    """What another process's ``idp keys rotate`` leaves: new rows, and no word to this one."""
    monkeypatch.setattr(keys.KeyRing, "changed_here", classmethod(lambda cls: None))
    engine = create_engine(normalise_url(app.extensions["idp.settings"].database_url))
    try:
        with Session(engine) as db:
            return keys.rotate_keys(db, cipher=app.extensions["idp.cipher"], clock=_clock(app))
    finally:
        engine.dispose()
        monkeypatch.undo()


def _clock(app):
    return app.extensions["idp.clock"]


def test_a_rotation_in_this_process_is_published_and_used_at_once(live_server, demo, clock):
    etag, before = jwks_kids(live_server)
    old_kid = id_token_kid(live_server, demo, clock)
    assert old_kid in before
    with live_server.app.app_context():
        created = keys.rotate_keys(get_db(), cipher=cipher(), clock=clock)
    new_etag, after = jwks_kids(live_server)
    assert new_etag != etag and after == before | set(created)  # retired keys stay published
    assert id_token_kid(live_server, demo, clock) in set(created) - before


def test_a_rotation_by_another_process_is_seen_after_one_second(
    live_server, demo, clock, monkeypatch
):
    etag, before = jwks_kids(live_server)
    created = rotate_elsewhere(live_server.app, monkeypatch)
    clock.advance(0.999)
    assert jwks_kids(live_server) == (etag, before)  # the stamp is not read again yet
    clock.advance(0.001)
    new_etag, after = jwks_kids(live_server)
    assert new_etag != etag and after == before | set(created)


def test_a_retired_key_leaves_the_jwks_when_its_grace_ends(live_server, demo, clock):
    _etag, before = jwks_kids(live_server)
    with live_server.app.app_context():
        created = keys.rotate_keys(get_db(), cipher=cipher(), clock=clock)
    clock.advance(7 * 86400 - 1)
    assert jwks_kids(live_server)[1] == before | set(created)
    clock.advance(1)
    assert jwks_kids(live_server)[1] == set(created)


def test_a_client_changed_elsewhere_is_read_again_after_ten_seconds(app, clock, demo):
    assert CLIENT_CACHE_SECONDS == 10.0
    cache = app.extensions["idp.clients"]
    with app.app_context():
        assert cache.get(get_db, demo["client_id"]).name == "Appli de démonstration"
    engine = create_engine(normalise_url(app.extensions["idp.settings"].database_url))
    with engine.begin() as conn:  # another process: no ORM event reaches this one
        conn.execute(
            text("UPDATE oauth_clients SET name = 'Renamed' WHERE client_id = :c"),
            {"c": demo["client_id"]},
        )
    engine.dispose()
    clock.advance(9.999)
    with app.app_context():
        assert cache.get(get_db, demo["client_id"]).name == "Appli de démonstration"
    clock.advance(0.001)
    with app.app_context():
        assert cache.get(get_db, demo["client_id"]).name == "Renamed"


def test_a_client_changed_here_is_read_again_at_once_and_an_unknown_one_is_never_kept(
    app, clock, demo
):
    cache = app.extensions["idp.clients"]
    with app.app_context():
        db = get_db()
        assert cache.get(lambda: db, demo["client_id"]).name == "Appli de démonstration"
        client = db.get(OAuthClient, cache.get(lambda: db, demo["client_id"]).id)
        client.name = "Changed here"
        db.commit()
        assert cache.get(lambda: db, demo["client_id"]).name == "Changed here"
        assert cache.get(lambda: db, "not-yet") is None
        db.add(
            OAuthClient(
                client_id="not-yet",
                name="New",
                token_endpoint_auth_method="none",
                created_at=clock.now(),
            )
        )
        db.commit()
        assert cache.get(lambda: db, "not-yet").name == "New"


class Statements:
    def __init__(self, app) -> None:
        self.counts: collections.Counter = collections.Counter()
        for name in ("idp.engine", "idp.state_engine"):
            event.listen(app.extensions[name], "before_cursor_execute", self._statement)
            event.listen(app.extensions[name], "commit", self._commit)

    def _statement(self, _conn, _cursor, statement, *_args):
        if not statement.lstrip().upper().startswith(("PRAGMA", "SAVEPOINT")):
            self.counts["statements"] += 1

    def _commit(self, _conn):
        self.counts["commits"] += 1

    def take(self) -> dict:
        taken = dict(self.counts)
        self.counts.clear()
        return taken


def test_a_code_exchange_runs_one_statement_on_postgresql_four_on_sqlite_and_userinfo_one(
    live_server, demo, clock
):
    rp, agent, location = full_login(live_server, demo, clock)
    # The keys and the client are in memory, as on a running server.
    requests.get(live_server.url + "/jwks.json")
    counted = Statements(live_server.app)
    token = rp.exchange(location)
    if live_server.app.extensions["idp.engine"].dialect.name == "postgresql":
        # the claim, the checks, the token and its audit row: one statement, autocommitted
        assert counted.take() == {"statements": 1}
    else:
        # the claim (UPDATE … RETURNING), the checks, the token, the audit row
        assert counted.take() == {"statements": 4, "commits": 1}
    # The browser's session cookie comes along: the client endpoints never load it.
    response = agent.http.get(
        live_server.url + "/userinfo",
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert response.status_code == 200
    assert counted.take() == {"statements": 1}
    assert agent.http.cookies.get("idp_session")
    for path in DOCUMENTS:
        assert agent.http.get(live_server.url + path).status_code == 200
    assert counted.take() == {}


def test_an_expired_code_is_spent_by_its_one_claim(live_server, demo, clock):
    rp, _agent, location = full_login(live_server, demo, clock)
    clock.advance(dt.timedelta(seconds=61).total_seconds())
    with pytest.raises(Exception, match="invalid_grant"):
        rp.exchange(location)
    clock.advance(-61)
    with pytest.raises(Exception, match="invalid_grant"):
        rp.exchange(location)  # within its minute again, but spent


def test_the_request_that_issues_a_code_is_validated_once(live_server, demo, clock, monkeypatch):
    """Authlib's ``create_authorization_response`` validates the request again after
    ``get_consent_grant`` did: the authorize view answers from the validated grant."""
    validated = collections.Counter()
    original = AuthorizationCodeGrant.validate_authorization_request

    def counted(grant):
        validated[grant.request.payload.data.get("state")] += 1
        return original(grant)

    monkeypatch.setattr(AuthorizationCodeGrant, "validate_authorization_request", counted)
    rp, _agent, location = full_login(live_server, demo, clock)
    assert "code" in location
    assert validated[rp.state] == 2  # when the login was asked for, then when it was done
    assert rp.exchange(location)["id_token"]
