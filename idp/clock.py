"""Injectable time source: services ask a Clock, never the system directly.

Tests pass a FrozenClock and move it with ``advance`` so expiry, TOTP and throttling
are exercised without sleeping.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Current time, timezone-aware UTC."""


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 15, 9, 0, tzinfo=dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def advance(self, seconds: float = 0, **kwargs: float) -> dt.datetime:
        self._now += dt.timedelta(seconds=seconds, **kwargs)
        return self._now

    def set(self, when: dt.datetime) -> None:
        self._now = when


def as_utc(value: dt.datetime) -> dt.datetime:
    """Databases may hand back naive datetimes (SQLite): treat them as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
