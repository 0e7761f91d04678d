"""Named throttles with growing delays, shared by all server processes.

A few failures are free; after that each failure doubles the wait, capped at one hour. No
permanent lockout: an attacker cannot lock a doctor out for good. Counters live in the
database, or in Redis when configured. If Redis is unreachable the throttle fails closed
(ThrottleUnavailableError): an identity provider must not verify factors unthrottled.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from idp.clock import Clock
from idp.models import ThrottleCounter

FREE_FAILURES = 5
IP_FREE_FAILURES = 50  # a hospital behind one NAT address must not lock out its doctors
MAX_DELAY_SECONDS = 3600
COUNTER_TTL_SECONDS = 24 * 3600


def free_failures(key: str) -> int:
    """Keys are ``<limiter>:<subject>``; limiters ending in ``.ip`` are per client address."""
    return IP_FREE_FAILURES if key.split(":", 1)[0].endswith(".ip") else FREE_FAILURES


def delay_after(failures: int, free: int = FREE_FAILURES) -> int:
    if failures <= free:
        return 0
    return min(2 ** (failures - free - 1), MAX_DELAY_SECONDS)


class ThrottleUnavailableError(Exception):
    """The shared counter store cannot be reached."""


class Throttle(Protocol):
    def retry_after(self, key: str) -> int:
        """Seconds to wait before ``key`` may try again (0: go ahead)."""

    def hit(self, key: str) -> None:
        """Record a failure."""

    def reset(self, key: str) -> None:
        """Forget failures after a success."""


class DatabaseThrottle:
    def __init__(self, db: Session, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def retry_after(self, key: str) -> int:
        row = self._db.get(ThrottleCounter, key)
        if row is None:
            return 0
        remaining = (row.blocked_until - self._clock.now()).total_seconds()
        return max(0, math.ceil(remaining))

    def hit(self, key: str) -> None:
        now = self._clock.now()
        row = self._db.execute(
            select(ThrottleCounter).where(ThrottleCounter.key == key).with_for_update()
        ).scalar_one_or_none()
        if row is None or (now - row.last_failure_at).total_seconds() > COUNTER_TTL_SECONDS:
            if row is not None:
                self._db.delete(row)
                self._db.flush()
            row = ThrottleCounter(key=key, failures=0, last_failure_at=now, blocked_until=now)
            self._db.add(row)
        row.failures += 1
        row.last_failure_at = now
        row.blocked_until = now + dt.timedelta(
            seconds=delay_after(row.failures, free_failures(key))
        )
        self._db.commit()

    def reset(self, key: str) -> None:
        self._db.execute(delete(ThrottleCounter).where(ThrottleCounter.key == key))
        self._db.commit()


class RedisThrottle:
    def __init__(self, client, clock: Clock, prefix: str = "idp:throttle:") -> None:
        self._redis = client
        self._clock = clock
        self._prefix = prefix

    def _call(self, fn, *args):
        import redis

        try:
            return fn(*args)
        except redis.RedisError as exc:
            raise ThrottleUnavailableError(str(exc)) from exc

    def retry_after(self, key: str) -> int:
        blocked_until = self._call(self._redis.hget, self._prefix + key, "blocked_until")
        if not blocked_until:
            return 0
        return max(0, math.ceil(float(blocked_until) - self._clock.now().timestamp()))

    def hit(self, key: str) -> None:
        name = self._prefix + key
        failures = self._call(self._redis.hincrby, name, "failures", 1)
        until = self._clock.now().timestamp() + delay_after(failures, free_failures(key))
        self._call(self._redis.hset, name, "blocked_until", str(until))
        self._call(self._redis.expire, name, COUNTER_TTL_SECONDS)

    def reset(self, key: str) -> None:
        self._call(self._redis.delete, self._prefix + key)
