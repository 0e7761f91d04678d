"""The account page's self-service: sessions, connected applications, the security history
with "This wasn't me", and a password change. Session parts run on both stores."""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace

import pytest
import requests
from authlib.integrations.base_client.errors import OAuthError
from sqlalchemy import select

from idp.accounts.selfservice import describe_user_agent
from idp.crypto import hash_token
from idp.db import dispose as dispose_app
from idp.db import get_db
from idp.models import AuditEvent, Consent, Practitioner, Token
from idp.services import cipher
from idp.sessions import Changes, DatabaseStore, RedisStore
from tests.support import factories
from tests.support.idp_server import LiveServer, build_app
from tests.support.oidc import RelyingParty, UserAgent, csrf_token, query_of, totp_now
from tests.support.redis import redis_url

REDIRECT = "http://localhost:9999/callback"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36"
)
NEW_PASSWORD = "Correct horse battery staple 42"
HANDLE_RE = re.compile(r'data-session="([0-9a-f]{64})"')


@pytest.fixture(params=["database", "redis"])
def server(request, app, database_url, tmp_path, clock):
    """A live IdP whose sessions are in the database, or in Redis (a prefix of its own)."""
    if request.param == "redis":
        client = request.getfixturevalue("redis_client")
        dispose_app(app)
        app = build_app(database_url, tmp_path, clock, redis_url=redis_url())
        prefix = f"test:{uuid.uuid4().hex}:session:"
        app.session_interface.store = RedisStore(client, prefix=prefix)
        # Throttle counters in the database: the test Redis is shared, and its counters for
        # 127.0.0.1 are other tests' to spend.
        app.extensions.pop("idp.redis")
    else:
        assert isinstance(app.session_interface.store, DatabaseStore)
    live = LiveServer(app)
    yield live
    live.stop()
    if request.param == "redis":
        for name in client.scan_iter(prefix + "*"):
            client.delete(name)
        dispose_app(app)


def someone(server, *, rpps: str, given_name: str = "Camille") -> dict:
    """An active practitioner with a password and an authenticator app."""
    with server.app.app_context():
        db = get_db()
        clock = server.app.extensions["idp.clock"]
        person = factories.practitioner(db, clock, rpps=rpps, given_name=given_name)
        _device, secret = factories.totp_device(db, clock, person, cipher=cipher())
        db.commit()
        return {"id": person.id, "rpps": rpps, "password": factories.PASSWORD, "secret": secret}


def sign_in(server, clock, who: dict, *, user_agent: str = FIREFOX, agent=None, start=None):
    """Password and code; the clock moves to a new TOTP step first (each step is single-use)."""
    clock.advance(30)
    agent = agent or UserAgent(server.url)
    agent.http.headers["User-Agent"] = user_agent
    agent.http.headers["Accept-Language"] = "en"
    page = agent.get(start or "/login")
    page = agent.post("/login", {"identifier": who["rpps"], "password": who["password"]}, page.text)
    assert page.url.endswith("/login/totp"), page.url
    return agent, agent.submit_totp(totp_now(who["secret"], clock), page)


def signed_in(agent) -> bool:
    page = agent.http.get(agent.base + "/account", allow_redirects=False)
    return page.status_code == 200


def handles(html: str) -> list[str]:
    return HANDLE_RE.findall(html)


def app_client(server, *, require_consent: bool = True) -> tuple[str, str]:
    with server.app.app_context():
        db = get_db()
        client, secret = factories.client(
            db, redirect_uris=[REDIRECT], name="Dossier patient", require_consent=require_consent
        )
        db.commit()
        return client.client_id, secret


def token_for(server, agent, client_id: str, secret: str) -> dict:
    """An access token for ``client_id``, through the signed-in browser (consent if asked)."""
    rp = RelyingParty(server.url, client_id, secret, REDIRECT)
    page = agent.get(rp.authorization_url())
    if page.status_code == 200 and "consent_decision" in page.text:
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        page = agent.post("/authorize", {**form, "consent_decision": "approve"})
    location = page.headers["Location"]
    assert location.startswith(REDIRECT) and "code" in query_of(location), location
    return rp.exchange(location)


def userinfo(server, token: dict) -> int:
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    return requests.get(f"{server.url}/userinfo", headers=headers, timeout=30).status_code


def events(server, practitioner_id: int) -> list[SimpleNamespace]:
    with server.app.app_context():
        found = get_db().execute(
            select(AuditEvent).where(AuditEvent.practitioner_id == practitioner_id)
        )
        return [
            SimpleNamespace(id=e.id, event=e.event, client_id=e.client_id, details=e.details)
            for e in found.scalars()
        ]


def practitioner(server, practitioner_id: int) -> Practitioner:
    with server.app.app_context():
        found = get_db().get(Practitioner, practitioner_id)
        get_db().expunge(found)
        return found


# --------------------------------------------------------------------------- User-Agent


@pytest.mark.parametrize(
    ("header", "name", "system"),
    [
        (FIREFOX, "Firefox", "Windows"),
        (CHROME_ANDROID, "Chrome", "Android"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
            "Gecko) Version/18.1 Safari/605.1.15",
            "Safari",
            "macOS",
        ),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
            "Edge",
            "Windows",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
            "like Gecko) CriOS/131.0 Mobile/15E148 Safari/604.1",
            "Chrome",
            "iPhone",
        ),
        ("curl/8.5.0", None, None),
        (None, None, None),
    ],
)
def test_a_user_agent_in_a_few_words(header, name, system):
    described = describe_user_agent(header)
    assert (described.name, described.system) == (name, system)


# --------------------------------------------------------------------------- sessions


@pytest.fixture(params=["database", "redis"])
def store(request, app):
    """The session store itself, in the database or in Redis (a prefix of its own)."""
    if request.param == "database":
        yield app.session_interface.store
        return
    client = request.getfixturevalue("redis_client")
    prefix = f"test:{uuid.uuid4().hex}:session:"
    yield RedisStore(client, prefix=prefix)
    for name in client.scan_iter(prefix + "*"):
        client.delete(name)


def opened(store, practitioner_id: int | None, *, user_agent: str = FIREFOX) -> str:
    sid = uuid.uuid4().hex
    data = {"csrf_token": "t"}
    if practitioner_id is not None:
        data["auth"] = {"practitioner_id": practitioner_id, "sid": sid[:8]}
    meta = {"ip": "192.0.2.7", "user_agent": user_agent}
    assert store.save(sid, data, 1000.0, 1000.0, 3600, new=True, meta=meta)
    return sid


def listed(store, practitioner_id: int) -> set[str]:
    return {s.id_hash for s in store.list_for(practitioner_id)}


def test_a_store_lists_and_ends_one_practitioners_sessions(store):
    first, second = opened(store, 7), opened(store, 7, user_agent="x" * 400)
    someone_else, anonymous = opened(store, 8), opened(store, None)
    assert listed(store, 7) == {hash_token(first), hash_token(second)}
    assert listed(store, 8) == {hash_token(someone_else)}
    kept = {s.id_hash: s for s in store.list_for(7)}
    assert kept[hash_token(second)].user_agent == "x" * 300
    assert kept[hash_token(first)].ip == "192.0.2.7"
    assert kept[hash_token(first)].created_at == 1000.0

    assert not store.delete_by_handle(8, hash_token(first))  # not theirs
    assert store.load(first) is not None
    assert store.delete_by_handle(7, hash_token(first))
    assert store.load(first) is None and listed(store, 7) == {hash_token(second)}

    # The login ends in a session (its key "auth" goes): it is no longer the practitioner's.
    assert store.merge(second, Changes(removed=frozenset({"auth"})), 1001.0, 3600)
    assert listed(store, 7) == set()
    assert store.merge(second, Changes({"auth": {"practitioner_id": 7}}), 1002.0, 3600)
    assert listed(store, 7) == {hash_token(second)}

    third = opened(store, 7)
    assert store.delete_for(7, keep=hash_token(third)) == 1
    assert listed(store, 7) == {hash_token(third)}
    assert store.delete_for(7) == 1 and listed(store, 7) == set()
    assert store.load(someone_else) is not None and store.load(anonymous) is not None


def test_redis_drops_index_entries_whose_session_expired(app, redis_client):
    prefix = f"test:{uuid.uuid4().hex}:session:"
    store = RedisStore(redis_client, prefix=prefix)
    try:
        gone, live = opened(store, 7), opened(store, 7)
        index = f"{prefix}by-practitioner:7"
        assert redis_client.ttl(index) > 0  # the index expires with the last session
        redis_client.delete(prefix + hash_token(gone))  # as its TTL would
        assert listed(store, 7) == {hash_token(live)}
        assert redis_client.smembers(index) == {hash_token(live).encode()}
        store.delete(live)
        assert not redis_client.exists(index)
    finally:
        for name in redis_client.scan_iter(prefix + "*"):
            redis_client.delete(name)


def test_the_account_page_lists_only_ones_own_sessions_and_signs_one_out(server, clock):
    camille = someone(server, rpps="10000000009")
    jules = someone(server, rpps="10000000017", given_name="Jules")
    here, page = sign_in(server, clock, camille)
    there, _ = sign_in(server, clock, camille, user_agent=CHROME_ANDROID)
    elsewhere, _ = sign_in(server, clock, jules)

    page = here.get("/account")
    assert page.status_code == 200
    assert "Firefox on Windows" in page.text and "Chrome on Android" in page.text
    assert page.text.count("data-current=") == 1 and "this session" in page.text
    assert "127.0.0.1" in page.text
    assert here.http.cookies["idp_session"] not in page.text  # never the cookie's id
    mine = handles(page.text)
    assert len(mine) == 2
    current = hash_token(here.http.cookies["idp_session"])
    other = next(h for h in mine if h != current)
    assert other == hash_token(there.http.cookies["idp_session"])

    store = server.app.session_interface.store
    listed = store.list_for(camille["id"])
    assert {s.id_hash for s in listed} == set(mine)
    assert {s.user_agent for s in listed} == {FIREFOX, CHROME_ANDROID}
    jules_handle = handles(elsewhere.get("/account").text)[0]

    # Someone else's session: 404, and it stays.
    refused = here.post("/account/sessions/sign-out", {"session": jules_handle}, page.text)
    assert refused.status_code == 404
    assert signed_in(elsewhere)
    refused = here.post("/account/sessions/sign-out", {"session": "0" * 64}, page.text)
    assert refused.status_code == 404

    done = here.post("/account/sessions/sign-out", {"session": other}, page.text)
    assert done.status_code == 200 and "That session is signed out." in done.text
    assert handles(done.text) == [current]
    assert not signed_in(there)
    assert signed_in(here) and signed_in(elsewhere)
    assert [e.event for e in events(server, camille["id"])].count("account:session:signed_out") == 1


def test_sign_out_everywhere_ends_every_session_and_token(server, clock):
    camille = someone(server, rpps="10000000009")
    jules = someone(server, rpps="10000000017", given_name="Jules")
    client_id, secret = app_client(server, require_consent=False)
    here, _ = sign_in(server, clock, camille)
    there, _ = sign_in(server, clock, camille, user_agent=CHROME_ANDROID)
    elsewhere, _ = sign_in(server, clock, jules)
    token = token_for(server, there, client_id, secret)
    assert userinfo(server, token) == 200

    page = here.get("/account")
    ended = here.post("/account/sessions/sign-out-everywhere", {}, page.text)
    assert ended.status_code == 200 and "You are signed out everywhere" in ended.text
    assert not signed_in(here) and not signed_in(there)
    assert signed_in(elsewhere)
    assert userinfo(server, token) == 401
    assert server.app.session_interface.store.list_for(camille["id"]) == []


# --------------------------------------------------------------------------- applications


def test_revoking_an_application_revokes_its_tokens_and_asks_consent_again(server, clock):
    camille = someone(server, rpps="10000000009")
    client_id, secret = app_client(server)
    agent, _ = sign_in(server, clock, camille)
    token = token_for(server, agent, client_id, secret)
    assert userinfo(server, token) == 200

    page = agent.get("/account")
    assert "Dossier patient" in page.text and "Your RPPS number and profession" in page.text
    assert f'data-client="{client_id}"' in page.text and "last sign-in" in page.text
    missing = agent.post("/account/applications/revoke", {"client_id": "nope"}, page.text)
    assert missing.status_code == 404

    done = agent.post("/account/applications/revoke", {"client_id": client_id}, page.text)
    assert done.status_code == 200
    assert "The application no longer has access to your account." in done.text
    assert "Dossier patient" not in done.text
    assert userinfo(server, token) == 401
    with server.app.app_context():
        assert get_db().execute(select(Consent)).first() is None
        tokens = get_db().execute(select(Token)).scalars().all()
        assert tokens and all(t.revoked_at is not None for t in tokens)
    revoked = [e for e in events(server, camille["id"]) if e.event == "account:consent:revoked"]
    assert len(revoked) == 1 and revoked[0].client_id == client_id

    rp = RelyingParty(server.url, client_id, secret, REDIRECT)
    again = agent.get(rp.authorization_url())
    assert again.status_code == 200 and "consent_decision" in again.text


# --------------------------------------------------------------------------- history


def test_this_wasnt_me_signs_out_everywhere_and_forces_a_new_password(server, clock):
    camille = someone(server, rpps="10000000009")
    jules = someone(server, rpps="10000000017", given_name="Jules")
    client_id, secret = app_client(server, require_consent=False)
    here, _ = sign_in(server, clock, camille)
    there, _ = sign_in(server, clock, camille, user_agent=CHROME_ANDROID)
    token = token_for(server, there, client_id, secret)

    page = here.get("/account/activity")
    assert page.status_code == 200
    assert "Signed in with a code from your authenticator app" in page.text
    assert "Signed in" in page.text and "Firefox on Windows" in page.text
    ids = [int(i) for i in re.findall(r'data-event="(\d+)"', page.text)]
    assert ids == sorted(ids, reverse=True) and ids
    with server.app.app_context():
        db = get_db()
        from idp import audit

        with server.app.test_request_context():
            jules_event = audit.record(db, "auth:password:failed", practitioner_id=jules["id"])
            db.commit()
            jules_event = jules_event.id
    refused = here.post("/account/activity/not-me", {"event": str(jules_event)}, page.text)
    assert refused.status_code == 404
    assert not practitioner(server, camille["id"]).password_change_required

    waiting = RelyingParty(server.url, client_id, secret, REDIRECT)  # a code not yet redeemed
    code_at = there.get(waiting.authorization_url()).headers["Location"]
    assert "code" in query_of(code_at)
    reported = here.post("/account/activity/not-me", {"event": str(ids[0])}, page.text)
    assert reported.status_code == 200 and "Your account is protected" in reported.text
    assert "choose a new password" in reported.text
    assert not signed_in(here) and not signed_in(there)
    assert userinfo(server, token) == 401
    assert practitioner(server, camille["id"]).password_change_required
    with pytest.raises(OAuthError):  # nor is a code issued before the report redeemed
        waiting.exchange(code_at)
    not_me = [e for e in events(server, camille["id"]) if e.event == "account:not_me"]
    assert len(not_me) == 1 and not_me[0].details["event_id"] == ids[0]

    # The next login goes through the new password page, and nothing else opens meanwhile.
    rp = RelyingParty(server.url, client_id, secret, REDIRECT)
    agent, landed = sign_in(server, clock, camille, start=rp.authorization_url())
    assert landed.status_code == 200 and landed.url.endswith("/account/password/new")
    for path in ("/account", "/account/activity", "/account/password"):
        held = agent.http.get(server.url + path, allow_redirects=False)
        assert held.status_code == 302 and held.headers["Location"].endswith(
            "/account/password/new"
        )
    held = agent.http.get(rp.authorization_url(), allow_redirects=False)
    assert held.status_code == 302 and held.headers["Location"].endswith("/account/password/new")
    assert practitioner(server, camille["id"]).password_change_required

    # The old password again is refused; a new one continues to the application.
    page = agent.get("/account/password/new")
    same = agent.post(
        "/account/password/new",
        {"password": camille["password"], "confirm": camille["password"]},
        page.text,
    )
    assert same.status_code == 400 and "different from your current one" in same.text
    done = agent.post(
        "/account/password/new", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, same.text
    )
    assert done.status_code in (302, 303) and done.headers["Location"].startswith(REDIRECT)
    assert "code" in query_of(done.headers["Location"])
    assert not practitioner(server, camille["id"]).password_change_required
    assert signed_in(agent)


def test_history_pages_through_older_events(server, clock):
    camille = someone(server, rpps="10000000009")
    with server.app.app_context():
        db = get_db()
        from idp import audit

        for _ in range(35):
            audit.record(db, "auth:password:failed", practitioner_id=camille["id"])
        audit.record(db, "something:unknown:happened", practitioner_id=camille["id"])
        db.commit()
    agent, _ = sign_in(server, clock, camille)
    first = agent.get("/account/activity")
    assert first.text.count("data-event=") == 30
    assert "Wrong password entered" in first.text
    older = re.search(r'href="(/account/activity\?before=\d+)"', first.text).group(1)
    second = agent.get(older.replace("&amp;", "&"))
    shown = re.findall(r'data-event="(\d+)"', first.text + second.text)
    assert len(shown) == len(set(shown)) == len(events(server, camille["id"]))
    assert "Other security event" in first.text + second.text
    assert "Show older events" not in second.text
    assert agent.http.get(server.url + "/account/activity?before=x").status_code == 404


# --------------------------------------------------------------------------- password


def test_a_password_change_needs_a_recent_login(server, clock):
    camille = someone(server, rpps="10000000009")
    agent, _ = sign_in(server, clock, camille)
    assert agent.get("/account/password").status_code == 200
    clock.advance(6 * 60)
    moved = agent.http.get(server.url + "/account/password", allow_redirects=False)
    assert moved.status_code == 302 and moved.headers["Location"].endswith("/login/reauthenticate")


def test_a_password_change_signs_out_the_other_sessions(server, clock):
    camille = someone(server, rpps="10000000009")
    here, _ = sign_in(server, clock, camille)
    there, _ = sign_in(server, clock, camille, user_agent=CHROME_ANDROID)
    page = here.get("/account/password")
    form = {"current": camille["password"], "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    done = here.post("/account/password", form, page.text)
    assert done.status_code == 200 and done.url.endswith("/account?done=password")
    assert "Your password is changed." in done.text
    assert signed_in(here) and not signed_in(there)
    stored = practitioner(server, camille["id"])
    assert server.app.extensions["idp.passwords"].verify(stored.password_hash, NEW_PASSWORD)
    assert stored.password_hash.startswith("$argon2id$")
    assert "account:password:changed" in [e.event for e in events(server, camille["id"])]
    # The new password signs in; the old one no longer does.
    sign_in(server, clock, {**camille, "password": NEW_PASSWORD})
    old = UserAgent(server.url).login_password(camille["rpps"], camille["password"])
    assert old.status_code == 401


def test_a_wrong_current_password_is_refused_and_throttled(live_server, clock):
    camille = someone(live_server, rpps="10000000009")
    agent, _ = sign_in(live_server, clock, camille)
    page = agent.get("/account/password")
    form = {"current": "not my password at all", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}
    statuses = []
    for _ in range(12):
        answer = agent.post("/account/password", form, page.text)
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            break
        assert answer.status_code == 400 and "This is not your current password." in answer.text
        assert 'aria-invalid="true"' in answer.text
        page = answer
    assert statuses[-1] == 429 and len(statuses) > 1, statuses
    assert answer.headers["Retry-After"]
    assert "Too many attempts" in answer.text
    failed = [e for e in events(live_server, camille["id"]) if e.event == "auth:password:failed"]
    assert len(failed) == len(statuses) - 1
    assert live_server.app.extensions["idp.passwords"].verify(
        practitioner(live_server, camille["id"]).password_hash, camille["password"]
    )
    assert csrf_token(answer.text)
