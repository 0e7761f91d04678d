"""The test Redis server: CI must provide one (a missing one fails there, never skips)."""

from __future__ import annotations

import os

import pytest


def redis_url() -> str:
    return os.environ.get("IDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_client_or_fail():
    import redis

    client = redis.Redis.from_url(redis_url(), socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI ({redis_url()}): {exc}", pytrace=False)
        pytest.skip(f"Redis at {redis_url()}: {exc}")
    return client
