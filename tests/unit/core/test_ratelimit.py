"""The throttle contract, on both backends: reserved before verifying, growing delays with a
cap, a ceiling on consecutive failures, counters that expire, and bursts that get no more
guesses than a sequence. Every edge is tested on both sides with literal values."""

from __future__ import annotations

import threading
import uuid

import pytest

from idp.clock import FrozenClock
from idp.ratelimit import (
    LIMITS,
    DatabaseThrottle,
    RedisThrottle,
    ThrottledError,
    ThrottleUnavailableError,
    delay_after,
    ensure_allowed,
    key,
)


@pytest.fixture
def frozen():
    return FrozenClock()


@pytest.fixture(params=["database", "redis"])
def throttle(request, app, frozen):
    if request.param == "redis":
        client = request.getfixturevalue("redis_client")
        yield RedisThrottle(client, frozen, prefix=f"test:{uuid.uuid4().hex}:")
        return
    yield DatabaseThrottle(app.extensions["idp.state_engine"], frozen)


def fail(throttle, keys, times=1):
    for _ in range(times):
        throttle.reserve(keys)


def wait_of(throttle, keys) -> int:
    with pytest.raises(ThrottledError) as refused:
        throttle.reserve(keys)
    return refused.value.retry_after


def test_delays_are_powers_of_two_after_the_free_failures():
    assert [delay_after(n, 5) for n in (0, 5, 6, 7, 8, 17, 18)] == [0, 0, 1, 2, 4, 2048, 3600]
    assert delay_after(10_000, 5) == 3600


def test_the_account_limit_allows_ten_free_failures_then_waits(throttle, frozen):
    keys = [key("login.account", 7)]
    fail(throttle, keys, 10)
    assert throttle.retry_after(keys[0]) == 0  # ten failures: still free
    fail(throttle, keys)  # the eleventh waits one second afterwards
    assert throttle.retry_after(keys[0]) == 1
    assert wait_of(throttle, keys) == 1
    frozen.advance(1)
    fail(throttle, keys)  # the twelfth: two seconds
    assert wait_of(throttle, keys) == 2
    frozen.advance(1)
    assert wait_of(throttle, keys) == 1
    frozen.advance(1)
    throttle.reserve(keys)


def test_delays_are_capped_at_one_hour(throttle, frozen):
    keys = [key("login.ip", "192.0.2.1")]  # no ceiling on addresses
    fail(throttle, keys, 50)
    for _ in range(13):  # delays 1 … 4096 s: the thirteenth is capped
        throttle.reserve(keys)
        frozen.advance(wait_of(throttle, keys))
    throttle.reserve(keys)
    assert wait_of(throttle, keys) == 3600


def test_a_refused_reservation_counts_nothing(throttle, frozen):
    keys = [key("2fa.device", 7, "dev")]
    fail(throttle, keys, 6)  # five free, the sixth waits 1 s
    for _ in range(5):
        assert wait_of(throttle, keys) == 1
    frozen.advance(1)
    throttle.reserve(keys)  # the seventh: 2 s, not 7 s
    assert wait_of(throttle, keys) == 2


def test_one_blocked_key_refuses_the_attempt_on_every_key(throttle):
    address, account = key("login.ip", "192.0.2.9"), key("login.account", 8)
    fail(throttle, [account], 11)
    with pytest.raises(ThrottledError) as refused:
        throttle.reserve([address, account])
    assert refused.value.keys == (account,)
    assert refused.value.blocks("login.account") and not refused.value.blocks("login.ip")
    assert throttle.reserve([address]).failures == {address: 1}  # nothing counted before


def test_ceiling_of_one_hundred_consecutive_failures(throttle, frozen):
    keys = [key("login.account", 9)]
    failures = 0
    while failures < 99:
        try:
            throttle.reserve(keys)
            failures += 1
        except ThrottledError as exc:
            frozen.advance(exc.retry_after)
    frozen.advance(3600)
    assert throttle.reserve(keys).failures == {keys[0]: 100}
    frozen.advance(3600)  # past the delay: the ceiling still refuses
    assert wait_of(throttle, keys) == 86400 - 3600
    frozen.advance(86399 - 3600)  # a second short of a day after the last failure
    assert wait_of(throttle, keys) == 1
    frozen.advance(1)  # a day: the counter starts again
    assert throttle.reserve(keys).failures == {keys[0]: 1}


def test_counters_start_again_after_a_day_without_failures(throttle, frozen):
    keys = [key("2fa.account", 10)]
    fail(throttle, keys, 4)
    frozen.advance(86399)
    assert throttle.reserve(keys).failures == {keys[0]: 5}  # a second short of a day: counted
    frozen.advance(86400)
    assert throttle.reserve(keys).failures == {keys[0]: 1}


def test_success_resets_personal_keys_and_hands_back_shared_ones(throttle):
    address, account = key("login.ip", "192.0.2.2"), key("login.account", 11)
    fail(throttle, [address, account], 3)
    reservation = throttle.reserve([address, account])
    assert reservation.failures == {address: 4, account: 4}
    throttle.succeeded(reservation)  # the account's key is reset, the address hands back
    assert throttle.reserve([address, account]).failures == {address: 4, account: 1}


def test_forgiven_attempts_are_handed_back_everywhere(throttle):
    address = key("smartcard.ip", "192.0.2.3")
    fail(throttle, [address], 2)
    throttle.forgive(throttle.reserve([address]))
    assert throttle.reserve([address]).failures == {address: 3}


def test_the_login_limiter_stops_after_three_answers(throttle):
    keys = [key("2fa.login", "abc")]
    assert [throttle.reserve(keys).count("2fa.login") for _ in range(2)] == [1, 2]
    throttle.succeeded(throttle.reserve(keys))  # a success keeps the login's answer counted
    with pytest.raises(ThrottledError) as refused:
        throttle.reserve(keys)
    assert refused.value.blocks("2fa.login")


def test_read_only_check_counts_nothing(throttle):
    keys = [key("login.account", 12)]
    fail(throttle, keys, 5)
    ensure_allowed(throttle, keys)
    ensure_allowed(throttle, keys)
    fail(throttle, keys, 5)
    fail(throttle, keys)  # the eleventh failure: one second
    with pytest.raises(ThrottledError):
        ensure_allowed(throttle, keys)


def test_only_named_limiters_exist():
    assert "login.user" not in LIMITS
    with pytest.raises(KeyError):
        key("login.user", 1)


def test_a_parallel_burst_gets_no_more_guesses_than_a_sequence(throttle, app):
    """Twenty attempts at once on an account whose free failures are spent: one goes through."""
    account = key("login.account", 13)
    fail(throttle, [account], 10)
    outcomes = _burst(throttle, app, [account], 20)
    assert outcomes.count("reserved") == 1 and outcomes.count("throttled") == 19


def test_the_first_write_of_a_key_is_never_a_race(throttle, app):
    """Twenty first attempts at once on a fresh key: all counted, none fails."""
    address = key("2fa.ip", "198.51.100." + uuid.uuid4().hex[:2])
    outcomes = _burst(throttle, app, [address], 20)
    assert outcomes == ["reserved"] * 20
    assert throttle.reserve([address]).failures == {address: 21}


def test_redis_down_fails_closed(frozen):
    import redis

    throttle = RedisThrottle(redis.Redis(host="127.0.0.1", port=1, socket_timeout=0.2), frozen)
    with pytest.raises(ThrottleUnavailableError):
        throttle.reserve([key("login.account", 1)])
    with pytest.raises(ThrottleUnavailableError):
        throttle.retry_after(key("login.account", 1))


def _burst(throttle, app, keys, count: int) -> list[str]:
    """``count`` threads reserve at once, each with its own database session."""
    barrier = threading.Barrier(count)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt():
        barrier.wait()
        try:
            throttle.reserve(keys)
            outcome = "reserved"
        except ThrottledError:
            outcome = "throttled"
        except Exception as exc:  # the point of the test: no error at all
            outcome = f"error: {exc!r}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(outcomes)
