"""idp.factors.smartcard.login without a card: codes, transaction states, single-use pick-up."""

from __future__ import annotations

import math
import threading

import pytest
from sqlalchemy import select, update

from idp import challenges
from idp.accounts import service as accounts
from idp.crypto import hash_token
from idp.db import get_db
from idp.factors.smartcard import login as service
from idp.models import AuthChallenge, PractitionerStatus, SmartcardLogin
from idp.ratelimit import ThrottledError


@pytest.fixture
def practitioner(db, clock):
    created = accounts.create_practitioner(
        db,
        rpps="99700000008",
        given_name="Jeanne",
        family_name="Martin",
        profession_code="10",
        email="jeanne@example.test",
        clock=clock,
    )
    created.status = PractitionerStatus.ACTIVE
    db.commit()
    return created


def test_codes_carry_forty_bits_from_an_unambiguous_alphabet():
    assert len(set(service.CODE_ALPHABET)) == len(service.CODE_ALPHABET) == 32
    assert not set("01IO") & set(service.CODE_ALPHABET)
    assert service.CODE_LENGTH * math.log2(len(service.CODE_ALPHABET)) >= 40
    codes = {service.new_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(service.normalise_code(code) == code for code in codes)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("abcd-efgh", "ABCDEFGH"),
        (" ABCD EFGH ", "ABCDEFGH"),
        ("ABCD-EFG", None),
        ("ABCD-EFG0", None),  # 0 is not in the alphabet
        ("ABCDEFGHJ", None),
        (None, None),
        ("A" * 500, None),
    ],
)
def test_typed_codes_are_normalised_or_refused(typed, expected):
    assert service.normalise_code(typed) == expected


def test_a_new_login_stores_only_the_code_hash_and_is_pending(db, clock):
    started = service.start_login(db, clock=clock)

    row = service.find_by_transaction(db, transaction=started.transaction)
    assert row.code_hash == hash_token(started.code)
    assert started.code not in {row.transaction, row.challenge_id, row.code_hash}
    assert service.find_by_code(db, code=started.code_display.lower()).id == row.id
    assert service.login_state(db, transaction=started.transaction, clock=clock).status == (
        "pending"
    )
    challenge = db.get(AuthChallenge, row.challenge_id)
    assert challenge.purpose == service.PURPOSE and len(challenge.challenge) == 32
    resumed = service.resume_login(
        db, transaction=started.transaction, code=started.code, clock=clock
    )
    assert resumed == started
    assert service.resume_login(db, transaction=started.transaction, code="X", clock=clock) is None


def test_a_reloaded_page_replaces_its_pending_transaction(db, clock):
    first = service.start_login(db, clock=clock)
    row = service.find_by_transaction(db, transaction=first.transaction)

    service.discard_login(db, transaction=first.transaction)

    assert service.find_by_transaction(db, transaction=first.transaction) is None
    assert db.get(AuthChallenge, row.challenge_id) is None


def test_states_seen_by_the_polling_page(db, clock, practitioner):
    started = service.start_login(db, clock=clock)

    def state():
        return service.login_state(db, transaction=started.transaction, clock=clock)

    assert state().status == "pending"
    complete(db, started.transaction, practitioner.id, method=service.TLS, clock=clock)
    assert state().status == "pending"  # a card-host completion is never revealed by polling
    db.execute(update(SmartcardLogin).values(method=service.CODE))
    db.commit()
    assert state().status == "completed"
    service.complete_code_login(db, transaction=started.transaction, clock=clock)
    assert state().status == "used"
    assert service.login_state(db, transaction=None, clock=clock).status == "expired"


def complete(db, transaction, practitioner_id, *, method, clock):
    db.execute(
        update(SmartcardLogin)
        .where(SmartcardLogin.transaction == transaction)
        .values(completed_at=clock.now(), practitioner_id=practitioner_id, method=method)
    )
    db.commit()


def test_completed_code_login_is_picked_up_once_even_concurrently(app, db, clock, practitioner):
    started = service.start_login(db, clock=clock)
    complete(db, started.transaction, practitioner.id, method=service.CODE, clock=clock)
    barrier = threading.Barrier(4)
    outcomes = []

    def pick_up():
        with app.app_context():
            session = get_db()
            barrier.wait()
            try:
                service.complete_code_login(session, transaction=started.transaction, clock=clock)
                outcomes.append("login")
            except service.TransactionInvalidError:
                outcomes.append("refused")

    threads = [threading.Thread(target=pick_up) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["login", "refused", "refused", "refused"]


def test_pick_up_window_and_method_are_enforced(db, clock, practitioner):
    tls = service.start_login(db, clock=clock)
    complete(db, tls.transaction, practitioner.id, method=service.TLS, clock=clock)
    with pytest.raises(service.TransactionInvalidError):  # TLS needs the card host's result
        service.complete_code_login(db, transaction=tls.transaction, clock=clock)

    late = service.start_login(db, clock=clock)
    complete(db, late.transaction, practitioner.id, method=service.CODE, clock=clock)
    clock.advance(service.PICKUP_WINDOW.total_seconds() + 1)
    with pytest.raises(service.TransactionInvalidError):
        service.complete_code_login(db, transaction=late.transaction, clock=clock)


def test_code_lookups_are_throttled_per_address(db, clock):
    from idp.ratelimit import DatabaseThrottle

    throttle = DatabaseThrottle(db.get_bind(), clock)
    started = service.start_login(db, clock=clock)
    request = service.signing_request(
        db,
        code=started.code,
        origin="https://idp.example",
        ip="192.0.2.1",
        throttle=throttle,
        clock=clock,
    )
    assert request.transaction == started.transaction
    challenges.consume(
        db,
        challenge_id=service.find_by_transaction(db, transaction=started.transaction).challenge_id,
        purpose=service.PURPOSE,
        clock=clock,
    )
    with pytest.raises(service.TransactionUsedError):
        service.signing_request(
            db,
            code=started.code,
            origin="https://idp.example",
            ip="192.0.2.1",
            throttle=throttle,
            clock=clock,
        )
    assert throttle.retry_after("smartcard.ip:192.0.2.1") == 0  # 50 free failures per address
    for _ in range(50):
        with pytest.raises(service.TransactionInvalidError):
            service.signing_request(
                db,
                code="ABCDEFGH",
                origin="https://idp.example",
                ip="192.0.2.1",
                throttle=throttle,
                clock=clock,
            )
    with pytest.raises(ThrottledError):
        service.signing_request(
            db,
            code=started.code,
            origin="https://idp.example",
            ip="192.0.2.1",
            throttle=throttle,
            clock=clock,
        )
    assert db.execute(select(SmartcardLogin.failure)).scalars().all() == [None]
