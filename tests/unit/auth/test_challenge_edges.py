"""idp.challenges at the edges of its limits, with literal values (STYLE 13).

A challenge issued at t can be consumed while ``now < t + 300 s``: at 299 s it is good, at
exactly 300 s it is expired (and purged by the next issue), as at 301 s.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from idp import challenges
from idp.models import AuthChallenge


def issue(db, clock, purpose: str = "edge", **kwargs) -> tuple[str, bytes]:
    issued = challenges.issue(db, purpose=purpose, practitioner_id=None, clock=clock, **kwargs)
    db.commit()
    return issued


def consumable(db, clock, challenge_id: str, purpose: str = "edge") -> bool:
    try:
        challenges.consume(db, challenge_id=challenge_id, purpose=purpose, clock=clock)
    except challenges.ChallengeInvalidError:
        return False
    return True


def stored_ids(db) -> set[str]:
    return set(db.execute(select(AuthChallenge.id)).scalars())


def test_consumed_at_299_seconds_not_at_300_or_301(db, clock):
    at_299, _c = issue(db, clock)
    at_300, _c = issue(db, clock)
    at_301, _c = issue(db, clock)
    clock.advance(299)
    assert consumable(db, clock, at_299)
    clock.advance(1)
    assert not consumable(db, clock, at_300)
    clock.advance(1)
    assert not consumable(db, clock, at_301)


def test_a_challenge_expires_300_seconds_after_issue(db, clock):
    issue(db, clock)
    [row] = db.execute(select(AuthChallenge)).scalars()
    assert (row.expires_at - row.created_at).total_seconds() == 300


def test_purged_once_300_seconds_old_kept_at_299(db, clock):
    old_id, _c = issue(db, clock)
    clock.advance(299)
    newer_id, _c = issue(db, clock)  # issuing purges expired rows
    assert stored_ids(db) == {old_id, newer_id}
    clock.advance(1)
    newest_id, _c = issue(db, clock)
    assert stored_ids(db) == {newer_id, newest_id}


def test_the_issued_challenge_has_32_random_bytes(db, clock):
    _id, challenge = issue(db, clock)
    assert len(challenge) == 32


def test_16_bytes_is_the_shortest_challenge_allowed(db, clock):
    challenge_id, challenge = issue(db, clock, nbytes=16)
    assert len(challenge) == 16
    assert consumable(db, clock, challenge_id)
    with pytest.raises(ValueError):
        challenges.issue(db, purpose="edge", practitioner_id=None, clock=clock, nbytes=15)


def test_discard_drops_only_that_unused_challenge(db, clock):
    used_id, _c = issue(db, clock)
    dropped_id, _c = issue(db, clock)
    other_id, _c = issue(db, clock)
    assert consumable(db, clock, used_id)
    challenges.discard(db, challenge_id=used_id)  # already used: kept as a record
    challenges.discard(db, challenge_id=dropped_id)
    db.commit()
    assert stored_ids(db) == {used_id, other_id}
    assert consumable(db, clock, other_id)


def test_an_id_that_is_not_text_is_refused(db, clock):
    issue(db, clock)
    for garbage in (12345, ["id"], b"bytes-id"):
        with pytest.raises(challenges.ChallengeInvalidError):
            challenges.consume(db, challenge_id=garbage, purpose="edge", clock=clock)


def test_consume_returns_the_row_as_claimed_even_if_already_loaded(db, clock):
    """A caller that read the row first (to check it is pending) gets it back marked used."""
    challenge_id, challenge = issue(db, clock)
    loaded = db.get(AuthChallenge, challenge_id)
    assert loaded.used_at is None
    clock.advance(5)
    row = challenges.consume(db, challenge_id=challenge_id, purpose="edge", clock=clock)
    assert row.challenge == challenge and row.used_at == clock.now()
