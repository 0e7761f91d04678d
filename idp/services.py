"""Access to the app-wide collaborators (clock, cipher, passwords, throttle) from request code."""

from __future__ import annotations

from flask import current_app, request

from idp.clock import Clock
from idp.config import Settings
from idp.crypto import DataCipher, Passwords


def clock() -> Clock:
    return current_app.extensions["idp.clock"]


def settings() -> Settings:
    return current_app.extensions["idp.settings"]


def cipher() -> DataCipher:
    return current_app.extensions["idp.cipher"]


def keyring():
    """This process's signing keys and JWKS (``idp.oauth.keys.KeyRing``)."""
    return current_app.extensions["idp.keyring"]


def passwords() -> Passwords:
    """Password hashing with this deployment's argon2id parameters (``IDP_ARGON2_*``)."""
    return current_app.extensions["idp.passwords"]


def client_address() -> str:
    """The client's address, through ``IDP_TRUSTED_PROXIES`` only (``idp.forwarded``)."""
    from idp.forwarded import client_address as resolve

    return resolve(
        remote_addr=request.environ.get("REMOTE_ADDR", ""),
        forwarded_for=request.headers.get("X-Forwarded-For"),
        trusted_proxies=settings().trusted_proxies,
    )


def throttle():
    """Redis when configured (shared, fast), else the database: both shared by processes."""
    from idp.ratelimit import DatabaseThrottle, RedisThrottle, configured

    limits = configured(settings().rate_limits)
    client = current_app.extensions.get("idp.redis")
    if client is not None:
        return RedisThrottle(client, clock(), limits=limits)
    return DatabaseThrottle(current_app.extensions["idp.state_engine"], clock(), limits=limits)


def methods():
    """This deployment's authentication methods (``idp.auth.registry.Registry``)."""
    return current_app.extensions["idp.methods"]
