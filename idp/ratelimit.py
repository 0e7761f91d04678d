"""Named limiters, reserved before verifying, shared by every server process.

Every factor check first *reserves* an attempt on each of its limiter keys, atomically, and
only then verifies. The reservation counts as a failure straight away, so a burst of parallel
requests gets exactly the guesses a sequence would: each one sees the count and the delay the
previous one left. What a success does is the limiter's own rule: it resets the keys that
belong to the person (their account, their device), hands the attempt back on shared ones (an
address), and keeps it on a login's own counter (answers still in flight for a login that just
succeeded get no fresh tries). An attempt that was no guess at all (a genuine card on a
suspended account) is handed back everywhere.

Each limiter allows a few free failures, then doubles the wait after each failure, capped at
one hour. Limiters with a ceiling refuse outright once that many consecutive failures are
counted (NIST 800-63B §5.2.2: at most 100), until a success resets them or a day passes
without failures. Counters live in the database, or in Redis when configured. If Redis is
unreachable the throttle fails closed (ThrottleUnavailableError): an identity provider must not
verify factors unthrottled.

Why per device: a per-account limit that applied to everyone would let an attacker keep a
practitioner locked out with one wrong password an hour. So a browser that already completed a
login for the account carries a device cookie (``idp.auth.devices``), and its attempts count on
a limiter of its own; only clients without it share the account's limiter (OWASP "device
cookies"). Guessing stays capped: everyone else shares one counter per account, per address.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from idp.clock import Clock
from idp.models import ThrottleCounter

MAX_DELAY_SECONDS = 3600
COUNTER_TTL_SECONDS = 24 * 3600
CONSECUTIVE_FAILURE_CEILING = 100  # NIST 800-63B §5.2.2
SECOND_STEP_FAILURES = 3  # wrong second-factor answers before the login restarts at the password


RESET, RELEASE, KEEP = "reset", "release", "keep"


@dataclass(frozen=True)
class Limit:
    free: int
    """Failures without any delay."""
    ceiling: int | None = None
    """Consecutive failures after which the key refuses until reset or expiry."""
    ttl: int = COUNTER_TTL_SECONDS
    """A counter whose last failure is this old starts again from zero."""
    on_success: str = RESET
    """RESET the key, RELEASE the attempt (shared keys), or KEEP it counted."""


ADDRESS = Limit(free=50, on_success=RELEASE)  # a hospital behind one NAT address
ACCOUNT = Limit(free=10, ceiling=CONSECUTIVE_FAILURE_CEILING)
DEVICE = Limit(free=5, ceiling=CONSECUTIVE_FAILURE_CEILING)

LIMITS: dict[str, Limit] = {
    # password step
    "login.ip": ADDRESS,
    "login.account": ACCOUNT,  # clients without this account's device cookie, together
    "login.device": DEVICE,  # one browser that already completed a login for the account
    # second factors, after the password
    "2fa.ip": ADDRESS,
    "2fa.account": DEVICE,  # whoever gets here holds the password: fewer free failures
    "2fa.device": DEVICE,
    # one login in progress: a few wrong answers send the practitioner back to the password
    "2fa.login": Limit(
        free=SECOND_STEP_FAILURES, ceiling=SECOND_STEP_FAILURES, ttl=3600, on_success=KEEP
    ),
    # passkeys and security keys (also alone, before any password)
    "webauthn.ip": ADDRESS,
    "webauthn.account": DEVICE,
    "webauthn.device": DEVICE,
    # recovery codes, after the password (each code works once; ~80 bits each)
    "recovery.ip": ADDRESS,
    "recovery.account": DEVICE,
    "recovery.device": DEVICE,
    # smart cards: per address only, a card's certificate is public (anyone could lock it)
    "smartcard.ip": ADDRESS,
    # account recovery requests (every factor lost), filed from one address
    "recovery_request.ip": Limit(free=10, ttl=COUNTER_TTL_SECONDS, on_success=KEEP),
    # "Forgot your password?": each request emails a link, so an address or an account may
    # ask only a few times an hour (no mailbox flooded); the account's limit is silent (the
    # page answers the same, no email), so it says nothing about which accounts exist.
    "password_reset.ip": Limit(free=20, ceiling=60, ttl=3600, on_success=KEEP),
    "password_reset.account": Limit(free=3, ceiling=5, ttl=3600, on_success=KEEP),
}


def key(limiter: str, *subject: object) -> str:
    """``<limiter>:<subject>``; only limiters named in LIMITS exist."""
    if limiter not in LIMITS:
        raise KeyError(f"no limiter named {limiter!r}")
    return ":".join([limiter, *map(str, subject)])


def account_patterns(limits: Mapping[str, Limit], subject: object) -> tuple[list[str], list[str]]:
    """Every counter that names ``subject`` (a practitioner id): exact keys (``.account``) and
    key prefixes (``.device``, followed by a browser's device id)."""
    exact = [f"{name}:{subject}" for name in sorted(limits) if name.endswith(".account")]
    prefixes = [f"{name}:{subject}:" for name in sorted(limits) if name.endswith(".device")]
    return exact, prefixes


def limiter_of(counter_key: str) -> str:
    return counter_key.split(":", 1)[0]


def limit_of(counter_key: str) -> Limit:
    return LIMITS[limiter_of(counter_key)]


def configured(overrides: Mapping[str, Limit]) -> dict[str, Limit]:
    """The named limiters with an operator's overrides (``IDP_RATE_LIMITS``)."""
    unknown = sorted(set(overrides) - set(LIMITS))
    if unknown:
        raise KeyError(f"no limiter named {', '.join(unknown)}")
    return {**LIMITS, **overrides}


def parse_overrides(value: str) -> dict[str, Limit]:
    """``login.account=20/100, 2fa.ip=80``: free failures, and optionally the ceiling."""
    overrides: dict[str, Limit] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, spec = item.partition("=")
        name = name.strip()
        free, _, ceiling = spec.strip().partition("/")
        if name not in LIMITS or not free.isdigit() or (ceiling and not ceiling.isdigit()):
            raise ValueError(f"{item!r} is not <limiter>=<free>[/<ceiling>] of a known limiter")
        base = LIMITS[name]
        top = int(ceiling) if ceiling else base.ceiling
        if top is not None and (top < 1 or top > CONSECUTIVE_FAILURE_CEILING or top < int(free)):
            raise ValueError(f"{item!r}: the ceiling must be between free and 100 (NIST 800-63B)")
        overrides[name] = Limit(
            free=int(free), ceiling=top, ttl=base.ttl, on_success=base.on_success
        )
    return overrides


def delay_after(failures: int, free: int) -> int:
    if failures <= free:
        return 0
    return min(2 ** min(failures - free - 1, 12), MAX_DELAY_SECONDS)  # 2**12 s is past the cap


class ThrottleUnavailableError(Exception):
    """The shared counter store cannot be reached."""


class ThrottledError(Exception):
    """Refused before verifying: wait ``retry_after`` seconds."""

    def __init__(self, retry_after: int, *, keys: Sequence[str] = ()) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after
        self.keys = tuple(keys)

    def blocks(self, limiter: str) -> bool:
        return any(limiter_of(k) == limiter for k in self.keys)


@dataclass
class Reservation:
    """One attempt, counted on every key before verifying."""

    failures: dict[str, int] = field(default_factory=dict)
    """Each key's consecutive failures, this attempt included."""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.failures)

    def count(self, limiter: str) -> int:
        return max((n for k, n in self.failures.items() if limiter_of(k) == limiter), default=0)


class Throttle(Protocol):
    def reserve(self, keys: Iterable[str]) -> Reservation:
        """Count an attempt on every key, or raise ThrottledError and count nothing."""

    def succeeded(self, reservation: Reservation) -> None:
        """The attempt succeeded: each key does what its limiter says (``Limit.on_success``)."""

    def forgive(self, reservation: Reservation) -> None:
        """The attempt was no guess: hand it back on every key."""

    def retry_after(self, key: str) -> int:
        """Seconds before ``key`` may try again (0: go ahead)."""

    def unlock(self, subject: int) -> list[str]:
        """An operator's unlock: every counter of this practitioner (each limiter's account
        and device keys) goes; returns the keys that were cleared."""


def ensure_allowed(throttle: Throttle, keys: Iterable[str]) -> None:
    """A read-only check, for steps that verify nothing (asking for WebAuthn options)."""
    keys = list(keys)
    waits = {k: throttle.retry_after(k) for k in keys}
    wait = max(waits.values(), default=0)
    if wait:
        raise ThrottledError(wait, keys=[k for k, w in waits.items() if w])


def _wait(limit: Limit, *, failures: int, blocked_until: float, last_failure: float, now: float):
    if now - last_failure >= limit.ttl:
        return 0, 0  # stale: starts again
    wait = max(0, math.ceil(blocked_until - now))
    if limit.ceiling is not None and failures >= limit.ceiling:
        wait = max(wait, math.ceil(last_failure + limit.ttl - now))
    return wait, failures


def _upsert(dialect):
    table = ThrottleCounter.__table__
    statement = dialect.insert(table).values(
        key=bindparam("k"),
        failures=0,
        last_failure_at=bindparam("now"),
        blocked_until=bindparam("now"),
    )
    return statement.on_conflict_do_update(
        index_elements=["key"], set_={"key": statement.excluded.key}
    ).returning(table)


# Built once (each call only binds its values): the throttle runs on every login step.
_UPSERT = {"postgresql": _upsert(postgresql), "sqlite": _upsert(sqlite)}
_COUNT = (
    update(ThrottleCounter.__table__)
    .where(ThrottleCounter.__table__.c.key == bindparam("k"))
    .values(
        failures=bindparam("failures"),
        last_failure_at=bindparam("now"),
        blocked_until=bindparam("until"),
    )
)


_RESET = delete(ThrottleCounter.__table__).where(
    ThrottleCounter.__table__.c.key.in_(bindparam("keys", expanding=True))
)
_RELEASE = (
    update(ThrottleCounter.__table__)
    .where(
        ThrottleCounter.__table__.c.key.in_(bindparam("keys", expanding=True)),
        ThrottleCounter.__table__.c.failures > 0,
    )
    .values(failures=ThrottleCounter.__table__.c.failures - 1)
)


class DatabaseThrottle:
    """Counters in ``throttle_counters``.

    Every call runs on its own short transaction, on the engine kept for such state
    (``idp.db.state_engine``): a reservation survives whatever the request does next (a
    rollback, an exception), and the request's own transaction never holds a counter's lock.
    Rows are upserted and locked in key order (``INSERT … ON CONFLICT DO UPDATE … RETURNING``,
    so the first write of a key is never a race; SQLite's single writer serialises the same
    statements).
    """

    def __init__(self, engine: Engine, clock: Clock, limits: Mapping[str, Limit] = LIMITS) -> None:
        self._engine = engine
        self._clock = clock
        self._limits = limits

    def _limit(self, counter_key: str) -> Limit:
        return self._limits[limiter_of(counter_key)]

    @staticmethod
    def _locked_rows(conn, ordered: list[str], now: dt.datetime) -> dict:
        """The keys' rows, created if missing, locked in key order until the transaction ends:
        one upsert for all of them (``ON CONFLICT DO UPDATE`` both creates and locks, even
        against a concurrent reset)."""
        upsert = _UPSERT[conn.dialect.name]
        rows = conn.execute(upsert, [{"k": key, "now": now} for key in ordered]).all()
        return {row.key: row for row in rows}

    def reserve(self, keys: Iterable[str]) -> Reservation:
        now = self._clock.now()
        ordered = sorted(set(keys))
        if not ordered:
            return Reservation({})
        counts: dict[str, int] = {}
        wait = 0
        blocking: list[str] = []
        with self._engine.begin() as conn:
            rows = self._locked_rows(conn, ordered, now)
            for counter_key in ordered:
                row = rows[counter_key]
                key_wait, failures = _wait(
                    self._limit(counter_key),
                    failures=row.failures,
                    blocked_until=_as_utc(row.blocked_until).timestamp(),
                    last_failure=_as_utc(row.last_failure_at).timestamp(),
                    now=now.timestamp(),
                )
                if key_wait:
                    blocking.append(counter_key)
                    wait = max(wait, key_wait)
                counts[counter_key] = failures + 1
            if wait:
                raise ThrottledError(wait, keys=blocking)  # rolled back: nothing counted
            conn.execute(
                _COUNT,
                [
                    {
                        "k": counter_key,
                        "failures": failures,
                        "now": now,
                        "until": now
                        + dt.timedelta(
                            seconds=delay_after(failures, self._limit(counter_key).free)
                        ),
                    }
                    for counter_key, failures in counts.items()
                ],
            )
        return Reservation(counts)

    def succeeded(self, reservation: Reservation) -> None:
        reset = [k for k in reservation.keys if self._limit(k).on_success == RESET]
        release = [k for k in reservation.keys if self._limit(k).on_success == RELEASE]
        with self._engine.begin() as conn:
            if reset:
                conn.execute(_RESET, {"keys": reset})
            self._release(conn, release)

    def forgive(self, reservation: Reservation) -> None:
        with self._engine.begin() as conn:
            self._release(conn, list(reservation.keys))

    @staticmethod
    def _release(conn, keys: list[str]) -> None:
        if keys:
            conn.execute(_RELEASE, {"keys": keys})

    def unlock(self, subject: int) -> list[str]:
        exact, prefixes = account_patterns(self._limits, subject)
        column = ThrottleCounter.__table__.c.key
        names = column.in_(exact)
        for prefix in prefixes:  # matched literally (autoescape): no LIKE wildcard gets in
            names = names | column.startswith(prefix, autoescape=True)
        with self._engine.begin() as conn:
            cleared = sorted(conn.execute(select(column).where(names)).scalars())
            if cleared:
                conn.execute(delete(ThrottleCounter.__table__).where(column.in_(cleared)))
        return cleared

    def retry_after(self, key: str) -> int:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(ThrottleCounter.__table__).where(ThrottleCounter.key == key)
            ).one_or_none()
        if row is None:
            return 0
        return _wait(
            self._limit(key),
            failures=row.failures,
            blocked_until=_as_utc(row.blocked_until).timestamp(),
            last_failure=_as_utc(row.last_failure_at).timestamp(),
            now=self._clock.now().timestamp(),
        )[0]


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# One script, so that checking and counting every key is a single atomic step in Redis.
# KEYS: the counters; ARGV: now, max delay, then free, ceiling (0: none) and ttl per key.
# Returns {wait, index of a blocking key or 0, failures of each key after this attempt}.
RESERVE_SCRIPT = """
local now = tonumber(ARGV[1])
local max_delay = tonumber(ARGV[2])
local wait, blocking = 0, 0
local counts = {}
for i, name in ipairs(KEYS) do
  local base = 3 + (i - 1) * 3
  local ceiling, ttl = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local failures = tonumber(redis.call('HGET', name, 'failures') or '0')
  local last = tonumber(redis.call('HGET', name, 'last_failure') or '0')
  local blocked_until = tonumber(redis.call('HGET', name, 'blocked_until') or '0')
  if now - last >= ttl then failures = 0; blocked_until = 0 end
  local key_wait = math.max(0, math.ceil(blocked_until - now))
  if ceiling > 0 and failures >= ceiling then
    key_wait = math.max(key_wait, math.ceil(last + ttl - now))
  end
  if key_wait > wait then wait = key_wait; blocking = i end
  counts[i] = failures + 1
end
if wait > 0 then return {wait, blocking} end
local result = {0, 0}
for i, name in ipairs(KEYS) do
  local base = 3 + (i - 1) * 3
  local free, ttl = tonumber(ARGV[base]), tonumber(ARGV[base + 2])
  local n = counts[i]
  local delay = 0
  if n > free then delay = math.min(2 ^ (n - free - 1), max_delay) end
  redis.call('HSET', name, 'failures', n, 'last_failure', ARGV[1],
             'blocked_until', tostring(now + delay))
  redis.call('EXPIRE', name, ttl)
  result[i + 2] = n
end
return result
"""

# After an attempt: the first ARGV[1] counters are reset (deleted), the others released (one
# failure fewer, never below zero).
SETTLE_SCRIPT = """
local resets = tonumber(ARGV[1])
for i, name in ipairs(KEYS) do
  if i <= resets then
    redis.call('DEL', name)
  elseif tonumber(redis.call('HGET', name, 'failures') or '0') > 0 then
    redis.call('HINCRBY', name, 'failures', -1)
  end
end
return 0
"""


class RedisThrottle:
    def __init__(
        self,
        client,
        clock: Clock,
        prefix: str = "idp:throttle:",
        limits: Mapping[str, Limit] = LIMITS,
    ) -> None:
        self._redis = client
        self._clock = clock
        self._prefix = prefix
        self._limits = limits
        self._reserve = client.register_script(RESERVE_SCRIPT)  # EVALSHA, loaded once
        self._settle = client.register_script(SETTLE_SCRIPT)

    def _limit(self, counter_key: str) -> Limit:
        return self._limits[limiter_of(counter_key)]

    def _call(self, fn, *args):
        import redis

        try:
            return fn(*args)
        except redis.RedisError as exc:
            raise ThrottleUnavailableError(str(exc)) from exc

    def reserve(self, keys: Iterable[str]) -> Reservation:
        ordered = sorted(set(keys))
        args: list[object] = [repr(self._clock.now().timestamp()), MAX_DELAY_SECONDS]
        for counter_key in ordered:
            limit = self._limit(counter_key)
            args += [limit.free, limit.ceiling or 0, limit.ttl]
        names = [self._prefix + k for k in ordered]
        result = self._call(self._reserve, names, args)
        wait, blocking = int(result[0]), int(result[1])
        if wait:
            raise ThrottledError(wait, keys=[ordered[blocking - 1]])
        return Reservation(dict(zip(ordered, (int(n) for n in result[2:]), strict=True)))

    def succeeded(self, reservation: Reservation) -> None:
        reset = [k for k in reservation.keys if self._limit(k).on_success == RESET]
        release = [k for k in reservation.keys if self._limit(k).on_success == RELEASE]
        self._settled(reset, release)

    def forgive(self, reservation: Reservation) -> None:
        self._settled([], list(reservation.keys))

    def _settled(self, reset: list[str], release: list[str]) -> None:
        if reset or release:
            names = [self._prefix + k for k in (*reset, *release)]
            self._call(self._settle, names, [len(reset)])

    def unlock(self, subject: int) -> list[str]:
        exact, prefixes = account_patterns(self._limits, subject)
        names = [self._prefix + k for k in exact]
        for prefix in prefixes:  # an operator command: a SCAN of the throttle's keys is fine
            pattern = self._prefix + prefix + "*"
            names += [
                n.decode() if isinstance(n, bytes) else n
                for n in self._call(lambda p=pattern: list(self._redis.scan_iter(match=p)))
            ]
        present = [n for n in names if self._call(self._redis.exists, n)]
        if present:
            self._call(self._redis.delete, *present)
        return sorted(n[len(self._prefix) :] for n in present)

    def retry_after(self, key: str) -> int:
        name = self._prefix + key
        values = self._call(self._redis.hmget, name, ["failures", "last_failure", "blocked_until"])
        if values[0] is None:
            return 0
        return _wait(
            self._limit(key),
            failures=int(values[0]),
            blocked_until=float(values[2] or 0),
            last_failure=float(values[1] or 0),
            now=self._clock.now().timestamp(),
        )[0]
