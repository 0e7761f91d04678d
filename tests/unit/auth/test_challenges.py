"""idp.challenges: random, single-use, short-lived, bound to a purpose (WA-01, STANDARDS C7)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp import challenges
from idp.models import AuthChallenge


def test_a_challenge_is_random_and_consumed_once(db, clock):
    first_id, first = challenges.issue(db, purpose="t", practitioner_id=None, clock=clock)
    second_id, second = challenges.issue(db, purpose="t", practitioner_id=None, clock=clock)
    db.commit()
    assert len(first) == 32 and first != second and first_id != second_id
    row = challenges.consume(db, challenge_id=first_id, purpose="t", clock=clock)
    assert row.challenge == first and row.used_at == clock.now()
    with pytest.raises(challenges.ChallengeInvalidError):
        challenges.consume(db, challenge_id=first_id, purpose="t", clock=clock)
    assert challenges.consume(db, challenge_id=second_id, purpose="t", clock=clock)


def test_the_claim_is_committed_before_the_caller_verifies(app, db, clock):
    """A verification that fails and rolls back must not give the challenge back."""
    challenge_id, _challenge = challenges.issue(db, purpose="p", practitioner_id=None, clock=clock)
    db.commit()
    challenges.consume(db, challenge_id=challenge_id, purpose="p", clock=clock)
    db.rollback()
    other = app.extensions["idp.sessionmaker"]()  # another process, another session
    try:
        with pytest.raises(challenges.ChallengeInvalidError):
            challenges.consume(other, challenge_id=challenge_id, purpose="p", clock=clock)
    finally:
        other.close()


def test_expiry_purpose_and_garbage_ids(db, clock):
    challenge_id, _challenge = challenges.issue(db, purpose="a", practitioner_id=None, clock=clock)
    db.commit()
    with pytest.raises(challenges.ChallengeInvalidError):
        challenges.consume(db, challenge_id=challenge_id, purpose="b", clock=clock)
    for garbage in (None, "", "x" * 500, "no-such-id"):
        with pytest.raises(challenges.ChallengeInvalidError):
            challenges.consume(db, challenge_id=garbage, purpose="a", clock=clock)
    clock.advance(challenges.CHALLENGE_TTL.total_seconds())
    with pytest.raises(challenges.ChallengeInvalidError):
        challenges.consume(db, challenge_id=challenge_id, purpose="a", clock=clock)


def test_expired_and_discarded_challenges_are_purged(db, clock):
    old_id, _challenge = challenges.issue(db, purpose="a", practitioner_id=None, clock=clock)
    kept_id, _challenge = challenges.issue(db, purpose="a", practitioner_id=None, clock=clock)
    db.commit()
    challenges.discard(db, challenge_id=kept_id)
    clock.advance(challenges.CHALLENGE_TTL.total_seconds() + 1)
    new_id, _challenge = challenges.issue(db, purpose="a", practitioner_id=None, clock=clock)
    db.commit()
    ids = set(db.execute(select(AuthChallenge.id)).scalars())
    assert ids == {new_id} and old_id not in ids
    assert db.execute(select(func.count()).select_from(AuthChallenge)).scalar_one() == 1


def test_short_challenges_are_refused(db, clock):
    with pytest.raises(ValueError):
        challenges.issue(db, purpose="a", practitioner_id=None, clock=clock, nbytes=8)
