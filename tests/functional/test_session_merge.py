"""Overlapping requests from one browser: each writes back only what it changed, merged onto
the session as stored when it finishes, so neither loses what the other wrote. On both stores.

The interleavings are fixed by hand: two requests open the session from the same cookie, each
changes it, and they save in a chosen order; at the store level, another request's write lands
between a save's read and its write. Then over HTTP, with two requests held until both have
loaded the session.
"""

from __future__ import annotations

import threading
import uuid

import pytest
import requests
from flask import request as flask_request
from sqlalchemy import event, select
from werkzeug.test import EnvironBuilder

from idp import sessions as server_sessions
from idp.db import dispose as dispose_app
from idp.demo import seed
from idp.models import WebSession
from idp.sessions import DatabaseStore, RedisStore, ServerSessionInterface
from tests.support.idp_server import LiveServer, build_app
from tests.support.inprocess import REDIRECT, valid_authorization
from tests.support.oidc import UserAgent, csrf_token
from tests.support.redis import redis_url

PENDING = {"params": [["client_id", "demo-rp"]], "client_name": "Démo", "at": 1712345678.25}
TTL = 3600


def changes(changed: dict):
    """Top-level keys a request set, as the session interface hands them to the store."""
    return server_sessions.Changes(changed)


@pytest.fixture(params=["database", "redis"])
def sessions(request, app):
    """The app's session interface, over the database or over Redis."""
    if request.param == "database":
        assert isinstance(app.session_interface.store, DatabaseStore)
        yield app.session_interface
        return
    client = request.getfixturevalue("redis_client")
    prefix = f"test:{uuid.uuid4().hex}:session:"
    yield ServerSessionInterface(RedisStore(client, prefix=prefix))
    for name in client.scan_iter(prefix + "*"):
        client.delete(name)


def open_request(app, sessions, sid: str | None):
    """What Flask does when a request with this cookie begins."""
    headers = {"Cookie": f"idp_session={sid}"} if sid else {}
    builder = EnvironBuilder(path="/", headers=headers)
    try:
        return sessions.open_session(app, app.request_class(builder.get_environ()))
    finally:
        builder.close()


def finish(app, sessions, session):
    """What Flask does when the request ends: the response, with its Set-Cookie if any."""
    response = app.response_class()
    sessions.save_session(app, session, response)
    return response


def set_cookie(response) -> str | None:
    found = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("idp_session=")]
    return found[0] if found else None


def started(app, sessions, data: dict) -> str:
    session = open_request(app, sessions, None)
    session.update(data)
    assert set_cookie(finish(app, sessions, session))
    return session.sid


def stored(sessions, sid: str) -> dict | None:
    loaded = sessions.store.load(sid)
    return None if loaded is None else loaded[0]


# --------------------------------------------------------------------------- two requests


@pytest.mark.parametrize("last", ["options", "authorize"])
def test_two_requests_setting_different_keys_both_keep_theirs(app, sessions, last):
    """The login page's passkey options call and a new /authorize, in either order."""
    sid = started(app, sessions, {"csrf_token": "t"})
    options = open_request(app, sessions, sid)
    authorize = open_request(app, sessions, sid)
    options["challenges"] = {"webauthn.passkey": "c1"}
    authorize["authz"] = PENDING
    first, second = (authorize, options) if last == "options" else (options, authorize)
    # The browser holds this id already: neither response sends it again.
    assert set_cookie(finish(app, sessions, first)) is None
    assert set_cookie(finish(app, sessions, second)) is None
    assert stored(sessions, sid) == {
        "csrf_token": "t",
        "challenges": {"webauthn.passkey": "c1"},
        "authz": PENDING,
    }


def test_a_change_inside_a_value_is_written_and_merged(app, sessions):
    """``session["challenges"][purpose] = x`` marks nothing modified; it is still written."""
    sid = started(app, sessions, {"challenges": {"webauthn.passkey": "c1"}})
    nested = open_request(app, sessions, sid)
    other = open_request(app, sessions, sid)
    nested["challenges"]["webauthn.login"] = "c2"
    other["authz"] = PENDING
    finish(app, sessions, other)
    finish(app, sessions, nested)
    assert stored(sessions, sid) == {
        "challenges": {"webauthn.passkey": "c1", "webauthn.login": "c2"},
        "authz": PENDING,
    }


def test_a_request_that_changed_nothing_overwrites_nothing(app, sessions):
    """A page view only slides the idle timeout: a key written meanwhile stays."""
    sid = started(app, sessions, {"csrf_token": "t"})
    page_view = open_request(app, sessions, sid)
    authorize = open_request(app, sessions, sid)
    authorize["authz"] = PENDING
    finish(app, sessions, authorize)
    assert set_cookie(finish(app, sessions, page_view)) is None
    assert stored(sessions, sid) == {"csrf_token": "t", "authz": PENDING}


@pytest.mark.parametrize("last", ["remove", "set"])
def test_one_key_removed_by_one_request_and_set_by_another_the_last_wins(app, sessions, last):
    sid = started(app, sessions, {"csrf_token": "t", "next": "/account", "step_up": {"pid": 1}})
    remover = open_request(app, sessions, sid)
    setter = open_request(app, sessions, sid)
    del remover["next"]
    remover["step_up"] = {"pid": 2}
    setter["next"] = "/account/webauthn/add"
    first, second = (setter, remover) if last == "remove" else (remover, setter)
    finish(app, sessions, first)
    finish(app, sessions, second)
    expected = {"csrf_token": "t", "step_up": {"pid": 2}}
    if last == "set":
        expected["next"] = "/account/webauthn/add"
    assert stored(sessions, sid) == expected


def test_a_removed_key_stays_removed_while_another_request_adds_its_own(app, sessions):
    sid = started(app, sessions, {"csrf_token": "t", "first_factor": {"pid": 1}})
    policy = open_request(app, sessions, sid)
    authorize = open_request(app, sessions, sid)
    policy.pop("first_factor")
    authorize["authz"] = PENDING
    finish(app, sessions, authorize)
    finish(app, sessions, policy)
    assert stored(sessions, sid) == {"csrf_token": "t", "authz": PENDING}


def test_a_clear_removes_what_it_loaded_and_keeps_a_key_added_meanwhile(app, sessions):
    sid = started(app, sessions, {"csrf_token": "t", "next": "/account"})
    clearing = open_request(app, sessions, sid)
    authorize = open_request(app, sessions, sid)
    clearing.clear()
    authorize["authz"] = PENDING
    finish(app, sessions, authorize)
    assert set_cookie(finish(app, sessions, clearing)) is None  # the cookie stays as it is
    assert stored(sessions, sid) == {"authz": PENDING}


def test_a_late_response_never_puts_back_a_cookie_the_browser_dropped(app, sessions):
    """A page's icon answered after the browser dropped its cookie and began a new session:
    the late response must not set the old id over the new one."""
    sid = started(app, sessions, {"csrf_token": "t"})
    late = open_request(app, sessions, sid)
    fresh = open_request(app, sessions, None)
    fresh["csrf_token"] = "u"
    assert set_cookie(finish(app, sessions, fresh)).startswith(f"idp_session={fresh.sid};")
    assert set_cookie(finish(app, sessions, late)) is None


def test_a_static_file_reads_no_session_and_sets_no_cookie(app, sessions):
    sid = started(app, sessions, {"csrf_token": "t"})
    builder = EnvironBuilder(path="/static/favicon.svg", headers={"Cookie": f"idp_session={sid}"})
    try:
        session = sessions.open_session(app, app.request_class(builder.get_environ()))
    finally:
        builder.close()
    assert session.sid is None and not session
    response = finish(app, sessions, session)
    assert set_cookie(response) is None
    assert stored(sessions, sid) == {"csrf_token": "t"}


@pytest.fixture
def store_reads(app, sessions, monkeypatch):
    """What the session store reads while the test runs: its SELECTs, or its Redis GETs."""
    reads: list[str] = []
    store = sessions.store
    if isinstance(store, DatabaseStore):

        def statement(_conn, _cursor, sql, *_args):
            if sql.lstrip().upper().startswith("SELECT"):
                reads.append(sql)

        engine = app.extensions["idp.state_engine"]
        event.listen(engine, "before_cursor_execute", statement)
        yield reads
        event.remove(engine, "before_cursor_execute", statement)
        return
    from redis.connection import AbstractConnection

    send = AbstractConnection.send_command

    def command(connection, *args, **kwargs):
        if str(args[0]).upper() == "GET":  # sent by the client: a script's own GET is not
            reads.append(args[1])
        return send(connection, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_command", command)
    yield reads


def test_a_request_alone_on_its_session_writes_it_without_reading_it_again(
    app, sessions, store_reads
):
    """The store's compare-and-swap starts from the text loaded with the request."""
    sid = started(app, sessions, {"csrf_token": "t"})
    session = open_request(app, sessions, sid)
    session["authz"] = PENDING
    store_reads.clear()
    finish(app, sessions, session)
    assert store_reads == []
    assert stored(sessions, sid) == {"csrf_token": "t", "authz": PENDING}


def test_a_session_emptied_by_its_request_is_deleted_with_its_cookie(app, sessions):
    sid = started(app, sessions, {"next": "/account"})
    session = open_request(app, sessions, sid)
    session.pop("next")
    response = finish(app, sessions, session)
    assert set_cookie(response).startswith("idp_session=;")  # deleted: empty, expired
    assert sessions.store.load(sid) is None


@pytest.mark.parametrize("order", ["destroy-first", "destroy-last"])
def test_a_logout_is_never_undone_by_a_request_in_flight(app, sessions, order):
    sid = started(app, sessions, {"csrf_token": "t", "auth": {"pid": 7}})
    logout = open_request(app, sessions, sid)
    authorize = open_request(app, sessions, sid)
    logout.destroy()
    authorize["authz"] = PENDING
    if order == "destroy-first":
        finish(app, sessions, logout)
        assert set_cookie(finish(app, sessions, authorize)) is None
    else:
        finish(app, sessions, authorize)
        finish(app, sessions, logout)
    assert sessions.store.load(sid) is None


def test_a_rotated_session_is_not_revived_under_its_old_id(app, sessions):
    """A login step writes its whole session under a new id; the other request's write to the
    old id goes nowhere (and sets no cookie that would replace the new one)."""
    sid = started(app, sessions, {"csrf_token": "t", "first_factor": {"pid": 7}})
    login = open_request(app, sessions, sid)
    options = open_request(app, sessions, sid)
    login.pop("first_factor")
    login["auth"] = {"pid": 7, "acr": "eidas2"}
    login.rotate()
    options["challenges"] = {"webauthn.passkey": "c1"}
    finish(app, sessions, login)
    assert login.sid != sid
    assert set_cookie(finish(app, sessions, options)) is None
    assert sessions.store.load(sid) is None
    assert stored(sessions, login.sid) == {"csrf_token": "t", "auth": {"pid": 7, "acr": "eidas2"}}


def test_the_idle_timeout_slides_without_a_change_and_the_absolute_one_holds(app, sessions, clock):
    idle = app.extensions["idp.settings"].session_idle_seconds
    absolute = app.extensions["idp.settings"].session_absolute_seconds
    sid = started(app, sessions, {"csrf_token": "t"})
    elapsed = 0
    while elapsed + idle <= absolute:
        clock.advance(idle)  # exactly on the edge: still open, and slid
        elapsed += idle
        session = open_request(app, sessions, sid)
        assert session.sid == sid and dict(session) == {"csrf_token": "t"}
        finish(app, sessions, session)
    clock.advance(absolute - elapsed + 1)  # less than the idle timeout, past the absolute
    assert open_request(app, sessions, sid).sid is None
    assert sessions.store.load(sid) is None


def test_the_practitioner_column_follows_the_merged_data(app):
    sessions = app.session_interface
    sid = started(app, sessions, {"csrf_token": "t"})
    login_elsewhere = open_request(app, sessions, sid)
    authorize = open_request(app, sessions, sid)
    login_elsewhere["auth"] = {"practitioner_id": 42}  # a CompletedLogin's shape
    authorize["authz"] = PENDING
    finish(app, sessions, login_elsewhere)
    finish(app, sessions, authorize)
    with app.extensions["idp.state_engine"].connect() as conn:
        column = conn.execute(select(WebSession.practitioner_id)).scalar_one()
    assert column == 42


# --------------------------------------------------------------------------- inside one save


def interleaved(base, other_write):
    """``base``'s changes, with ``other_write`` landing once between the save's first read of the
    stored session and its write. The list records each read the save made."""
    reads = []

    class Interleaved(server_sessions.Changes):
        def apply(self, stored):
            reads.append(dict(stored))
            if len(reads) == 1:
                other_write()
            return super().apply(stored)

    return Interleaved(base.changed, base.removed), reads


def test_a_write_landing_between_read_and_write_makes_the_save_read_again(app, sessions, clock):
    store = sessions.store
    sid = started(app, sessions, {"csrf_token": "t"})
    now = clock.now().timestamp()
    mine, reads = interleaved(
        changes({"challenges": {"webauthn.passkey": "c1"}}),
        lambda: store.merge(sid, changes({"authz": PENDING}), now, TTL),
    )
    assert store.merge(sid, mine, now, TTL) is True
    assert reads == [{"csrf_token": "t"}, {"csrf_token": "t", "authz": PENDING}]
    assert stored(sessions, sid) == {
        "csrf_token": "t",
        "authz": PENDING,
        "challenges": {"webauthn.passkey": "c1"},
    }


def test_a_delete_landing_between_read_and_write_is_not_undone(app, sessions, clock):
    store = sessions.store
    sid = started(app, sessions, {"csrf_token": "t"})
    mine, reads = interleaved(changes({"authz": PENDING}), lambda: store.delete(sid))
    assert store.merge(sid, mine, clock.now().timestamp(), TTL) is False
    assert len(reads) == 1
    assert store.load(sid) is None


def test_many_simultaneous_saves_each_keep_their_key(app, sessions, clock):
    store = sessions.store
    sid = started(app, sessions, {"csrf_token": "t"})
    now = clock.now().timestamp()
    writers = 6
    start = threading.Barrier(writers)
    failures = []

    def write(n: int) -> None:
        try:
            start.wait(timeout=10)
            assert store.merge(sid, changes({f"key{n}": n}), now, TTL) is True
        except BaseException as exc:  # reported below, from the test's own thread
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures
    assert stored(sessions, sid) == {"csrf_token": "t", **{f"key{n}": n for n in range(writers)}}


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(params=["database", "redis"])
def racing_server(request, app, database_url, tmp_path, clock):
    """A live IdP whose requests marked ``X-Race`` wait for each other at two points: when
    both have loaded the session, and before the one named last writes it back."""
    if request.param == "redis":
        request.getfixturevalue("redis_client")  # fails in CI, skips elsewhere, without Redis
        dispose_app(app)
        app = build_app(database_url, tmp_path, clock, redis_url=redis_url())
        assert isinstance(app.session_interface.store, RedisStore)
    race = {"loaded": threading.Barrier(2), "first_saved": threading.Event(), "last": None}

    @app.before_request
    def both_loaded():
        if flask_request.headers.get("X-Race"):
            race["loaded"].wait(timeout=20)

    @app.after_request
    def last_saves_last(response):
        if flask_request.headers.get("X-Race", "none") == race["last"]:
            assert race["first_saved"].wait(timeout=20)
        return response

    server = LiveServer(app)
    yield server, race
    server.stop()
    if request.param == "redis":
        dispose_app(app)


def test_a_passkey_options_call_overlapping_authorize_keeps_the_pending_request(racing_server):
    server, race = racing_server
    with server.app.app_context():
        seed(rp_url="http://localhost:9999")
    store = server.app.session_interface.store
    for attempt in range(10):
        agent = UserAgent(server.url)
        page = agent.get("/login").text
        sid = agent.http.cookies["idp_session"]
        cookie, token = f"idp_session={sid}", csrf_token(page)
        race["loaded"].reset()
        race["first_saved"].clear()
        race["last"] = "authorize" if attempt % 2 else "options"
        answers = {}

        def authorize(attempt=attempt):
            answers["authorize"] = requests.get(
                server.url + "/authorize",
                params=valid_authorization(state=f"attempt-{attempt}"),
                headers={"Cookie": cookie, "X-Race": "authorize"},
                allow_redirects=False,
                timeout=60,
            )

        def options():
            answers["options"] = requests.post(
                server.url + "/login/passkey/options",
                data={"csrf_token": token},
                headers={
                    "Cookie": cookie,
                    "X-CSRFToken": token,
                    "Accept": "application/json",
                    "X-Race": "options",
                },
                allow_redirects=False,
                timeout=60,
            )

        calls = {"authorize": authorize, "options": options}
        threads = {name: threading.Thread(target=call) for name, call in calls.items()}
        for thread in threads.values():
            thread.start()
        first = "options" if race["last"] == "authorize" else "authorize"
        threads[first].join(timeout=60)
        race["first_saved"].set()  # its response is back: its session is written
        threads[race["last"]].join(timeout=60)

        assert answers["authorize"].status_code == 302, answers["authorize"].text
        assert answers["authorize"].headers["Location"].endswith("/login")
        assert answers["options"].status_code == 200, answers["options"].text
        data = store.load(sid)[0]
        assert data.get("step.webauthn.passkey", {}).get("challenge"), (attempt, data)
        # The pending request is still there: cancelling it answers the application.
        cancelled = requests.post(
            server.url + "/authorize/cancel",
            data={"csrf_token": token},
            headers={"Cookie": cookie},
            allow_redirects=False,
            timeout=60,
        )
        assert cancelled.status_code in (302, 303), cancelled.text
        location = cancelled.headers["Location"]
        assert location.startswith(REDIRECT + "?"), (attempt, race["last"], location)
        assert f"state=attempt-{attempt}" in location and "error=access_denied" in location
        store.delete(sid)
