"""The prune: each kind of row goes once past its cutoff, not a second before; live rows and
the audit trail stay; one process prunes at a time."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from idp import housekeeping
from idp.db import get_db
from idp.models import (
    AuditEvent,
    AuthChallenge,
    AuthorizationCode,
    Invitation,
    OutboxMessage,
    PasswordReset,
    RecoveryApproval,
    RecoveryRequest,
    SmartcardLogin,
    ThrottleCounter,
    Token,
    WebSession,
)
from tests.support import factories

NOW = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)
_serial = iter(range(1, 10_000))


def _n() -> str:
    return f"{next(_serial):06d}"


def _token(conn, pid, when):
    # ``when`` is expires_at
    conn.execute(
        insert(Token.__table__).values(
            access_token_hash=_n(),
            client_id="c",
            practitioner_id=pid,
            scope="openid",
            acr="a",
            amr="pwd",
            auth_time=NOW,
            issued_at=when,
            expires_at=when,
        )
    )


def _code(conn, pid, when):
    # ``when`` is issued_at; the default code life is 60 s
    conn.execute(
        insert(AuthorizationCode.__table__).values(
            code_hash=_n(),
            client_id="c",
            practitioner_id=pid,
            redirect_uri="x",
            scope="openid",
            nonce=_n(),
            code_challenge="x",
            code_challenge_method="S256",
            auth_time=when,
            acr="a",
            amr="pwd",
            issued_at=when,
        )
    )


def _session_idle(conn, pid, when):
    conn.execute(
        insert(WebSession.__table__).values(
            id_hash=_n(), data="{}", created_at=NOW - 60 * S, last_seen_at=when
        )
    )


def _session_absolute(conn, pid, when):
    conn.execute(
        insert(WebSession.__table__).values(
            id_hash=_n(), data="{}", created_at=when, last_seen_at=NOW
        )
    )


def _challenge(conn, pid, when):
    conn.execute(
        insert(AuthChallenge.__table__).values(
            id=_n(), purpose="p", challenge=b"x", created_at=when - 60 * S, expires_at=when
        )
    )


def _card(conn, pid, when):
    conn.execute(
        insert(SmartcardLogin.__table__).values(
            transaction=_n(),
            challenge_id="x",
            code_hash=_n(),
            created_at=when - 60 * S,
            expires_at=when,
        )
    )


def _throttle(conn, pid, when):
    conn.execute(
        insert(ThrottleCounter.__table__).values(
            key=f"login.ip:{_n()}", failures=3, last_failure_at=when, blocked_until=when
        )
    )


def _mail(conn, pid, when):
    conn.execute(
        insert(OutboxMessage.__table__).values(
            to_address="a@example.test", subject="s", created_at=when, sent_at=when
        )
    )


def _reset(conn, pid, when):
    conn.execute(
        insert(PasswordReset.__table__).values(
            practitioner_id=pid, token_hash=_n(), created_at=when - 3600 * S, expires_at=when
        )
    )


def _invitation(conn, pid, when):
    conn.execute(
        insert(Invitation.__table__).values(
            practitioner_id=pid, token_hash=_n(), created_at=when - 3600 * S, expires_at=when
        )
    )


def _recovery(conn, pid, when):
    rid = conn.execute(
        insert(RecoveryRequest.__table__)
        .values(reference=_n()[-8:], practitioner_id=pid, created_at=when, status="denied")
        .returning(RecoveryRequest.__table__.c.id)
    ).scalar()
    conn.execute(insert(RecoveryApproval.__table__).values(request_id=rid, operator="op", at=when))


# kind, row maker, model, cutoff (rows older than it go)
KINDS = [
    ("tokens", _token, Token, NOW),
    ("authorization_codes", _code, AuthorizationCode, NOW - 60 * S),
    ("web_sessions_idle", _session_idle, WebSession, NOW - 30 * 60 * S),
    ("web_sessions_absolute", _session_absolute, WebSession, NOW - 12 * 3600 * S),
    ("auth_challenges", _challenge, AuthChallenge, NOW),
    ("smartcard_logins", _card, SmartcardLogin, NOW),
    ("throttle_counters", _throttle, ThrottleCounter, NOW - 24 * 3600 * S),
    ("mail_outbox", _mail, OutboxMessage, NOW - 30 * 24 * 3600 * S),
    ("password_resets", _reset, PasswordReset, NOW - 24 * 3600 * S),
    ("invitations", _invitation, Invitation, NOW - 24 * 3600 * S),
    ("recovery_requests", _recovery, RecoveryRequest, NOW - 365 * 24 * 3600 * S),
]


@pytest.fixture
def clock():
    from idp.clock import FrozenClock

    return FrozenClock(NOW)


@pytest.fixture
def pid(app, clock):
    with app.app_context():
        db = get_db()
        practitioner = factories.practitioner(db, clock)
        db.commit()
        return practitioner.id


def _count(app, model) -> int:
    with app.extensions["idp.engine"].connect() as conn:
        return conn.execute(select(func.count()).select_from(model.__table__)).scalar()


@pytest.mark.parametrize(("kind", "make", "model", "cutoff"), KINDS, ids=[k[0] for k in KINDS])
def test_a_row_goes_a_second_past_its_cutoff_and_stays_at_it(app, pid, kind, make, model, cutoff):
    with app.extensions["idp.engine"].begin() as conn:
        make(conn, pid, cutoff)  # exactly at the cutoff: stays
        make(conn, pid, cutoff - S)  # one second older: goes
    audit_before = _count(app, AuditEvent)
    removed = housekeeping.prune_app(app)
    assert removed[kind] == 1
    assert sum(removed.values()) == 1 + (kind == "recovery_requests")  # with its approval
    assert _count(app, model) == 1
    assert _count(app, AuditEvent) == audit_before


def test_an_unsent_mail_stays_however_old(app, pid):
    with app.extensions["idp.engine"].begin() as conn:
        conn.execute(
            insert(OutboxMessage.__table__).values(
                to_address="a@example.test", subject="s", created_at=NOW - 400 * 86400 * S
            )
        )
    assert housekeeping.prune_app(app)["mail_outbox"] == 0
    assert _count(app, OutboxMessage) == 1


def test_an_open_recovery_request_stays_however_old(app, pid):
    with app.extensions["idp.engine"].begin() as conn:
        conn.execute(
            insert(RecoveryRequest.__table__).values(
                reference="OPEN0001",
                practitioner_id=pid,
                created_at=NOW - 400 * 86400 * S,
                status="pending",
                open_for=pid,
            )
        )
    assert housekeeping.prune_app(app)["recovery_requests"] == 0


def test_a_throttle_counter_still_blocking_stays(app, pid):
    with app.extensions["idp.engine"].begin() as conn:
        conn.execute(
            insert(ThrottleCounter.__table__).values(
                key="login.ip:1",
                failures=9,
                last_failure_at=NOW - 2 * 86400 * S,
                blocked_until=NOW + S,
            )
        )
    assert housekeeping.prune_app(app)["throttle_counters"] == 0


def test_an_old_code_a_token_points_to_stays_until_the_token_goes(app, pid):
    with app.extensions["idp.engine"].begin() as conn:
        _code(conn, pid, NOW - 3600 * S)
        code_id = conn.execute(select(AuthorizationCode.__table__.c.id)).scalar()
        conn.execute(
            insert(Token.__table__).values(
                access_token_hash="t1",
                client_id="c",
                practitioner_id=pid,
                scope="openid",
                acr="a",
                amr="pwd",
                auth_time=NOW,
                issued_at=NOW,
                expires_at=NOW + 600 * S,
                authorization_code_id=code_id,
            )
        )
    assert housekeeping.prune_app(app)["authorization_codes"] == 0
    app.extensions["idp.clock"].advance(601)
    removed = housekeeping.prune_app(app)
    assert (removed["tokens"], removed["authorization_codes"]) == (1, 1)


def test_batches_loop_until_everything_expired_is_gone(app, pid):
    with app.extensions["idp.engine"].begin() as conn:
        for _ in range(7):
            _challenge(conn, pid, NOW - S)
    engine = app.extensions["idp.engine"]
    removed = housekeeping.prune(
        engine, app.extensions["idp.clock"], app.extensions["idp.settings"], batch=3
    )
    assert removed["auth_challenges"] == 7
    assert _count(app, AuthChallenge) == 0


def test_two_passes_at_once_one_runs(app, pid):
    from idp.turns import turn

    with turn(app, "prune", housekeeping.ADVISORY_LOCK_KEY) as mine:
        assert mine
        assert housekeeping.one_pass(app) is None  # another holder: skipped
    assert housekeeping.one_pass(app) is not None


def test_cli_prints_what_was_removed(app, pid, monkeypatch):
    with app.extensions["idp.engine"].begin() as conn:
        _challenge(conn, pid, NOW - S)
    from idp import cli

    monkeypatch.setattr(cli, "make_app", lambda: app)
    monkeypatch.setattr(cli, "dispose_app", lambda _app: None)
    result = CliRunner().invoke(cli.main, ["db", "prune", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["auth_challenges"] == 1
    result = CliRunner().invoke(cli.main, ["db", "prune"])
    assert "auth_challenges: 0" in result.output


def test_a_nonce_is_refused_again_while_its_code_lives_and_not_after(live_server, demo, clock):
    from tests.functional.test_oidc_flow import full_login
    from tests.support.oidc import query_of

    rp, agent, location = full_login(live_server, demo, clock)
    assert "code" in query_of(location)
    clock.advance(60)  # the code's last second of life: the nonce is still taken
    again = agent.get(rp.authorization_url())
    assert query_of(again.headers["Location"])["error"] == ["invalid_request"]
    clock.advance(1)  # past its life: the code can no longer be exchanged, nor pruned kept
    later = agent.get(rp.authorization_url())
    assert "code" in query_of(later.headers["Location"]), later.headers["Location"]


def test_the_background_pass_prunes_beside_the_app(app, pid):
    import time

    with app.extensions["idp.engine"].begin() as conn:
        _challenge(conn, pid, NOW - S)
    pruner = housekeeping.start(app, interval=0.05)
    try:
        deadline = time.monotonic() + 5
        while _count(app, AuthChallenge) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        pruner.stop()
    assert _count(app, AuthChallenge) == 0
