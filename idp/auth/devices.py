"""Device cookies: the browsers that already completed a login for an account.

After a complete login the browser gets a signed cookie naming the account and a random device
id. Its later attempts for that account count on a limiter of their own (``*.device``), so
failures from anywhere else (the account's shared limiter) never lock the practitioner out of
their own workstation (OWASP "Slow down online guessing attacks with device cookies"). The
cookie proves nothing about identity: it only chooses which counter an attempt lands on, and a
stolen one gives its thief one more counter of at most the same size. One cookie holds the
few accounts used on a shared workstation, most recent first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flask import after_this_request, current_app, request
from itsdangerous import BadSignature, URLSafeSerializer

from idp.crypto import derive_key, new_token
from idp.ratelimit import key

ACCOUNTS_PER_COOKIE = 8
COOKIE_MAX_AGE = 400 * 24 * 3600  # the longest browsers keep a cookie (RFC 6265bis)
MAX_COOKIE_LENGTH = 1024


@dataclass(frozen=True)
class Client:
    """Where an attempt comes from: its address and the accounts its browser has used."""

    ip: str
    devices: Mapping[int, str] = field(default_factory=dict)

    def account_keys(self, step: str, practitioner: object) -> list[str]:
        """This browser's own counter for the account if it has one, else the shared one."""
        device = self.devices.get(practitioner) if isinstance(practitioner, int) else None
        if device:
            return [key(f"{step}.device", practitioner, device)]
        return [key(f"{step}.account", practitioner)]


def cookie_name() -> str:
    https = current_app.extensions["idp.settings"].is_https
    return "__Host-idp_device" if https else "idp_device"


def _serializer() -> URLSafeSerializer:
    secret = current_app.extensions["idp.settings"].secret_key
    return URLSafeSerializer(derive_key(secret, "device-cookie"), salt="device")


def known_devices() -> dict[int, str]:
    """The (account, device id) pairs of this browser's cookie; nothing if it was tampered."""
    raw = request.cookies.get(cookie_name(), "")
    if not raw or len(raw) > MAX_COOKIE_LENGTH:
        return {}
    try:
        entries = _serializer().loads(raw)
    except BadSignature:
        return {}
    if not isinstance(entries, list):
        return {}
    devices = {}
    for entry in entries[:ACCOUNTS_PER_COOKIE]:
        if (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], int)
            and isinstance(entry[1], str)
        ):
            devices.setdefault(entry[0], entry[1])
    return devices


def current_client(ip: str) -> Client:
    return Client(ip=ip, devices=known_devices())


def remember_device(practitioner_id: int) -> None:
    """Called once a login is complete: the response carries the updated cookie."""
    devices = known_devices()
    device = devices.pop(practitioner_id, None) or new_token(16)
    entries = [[practitioner_id, device]] + [[pid, d] for pid, d in devices.items()]
    value = _serializer().dumps(entries[:ACCOUNTS_PER_COOKIE])
    set_browser_cookie(cookie_name(), value, max_age=COOKIE_MAX_AGE)


def set_browser_cookie(name: str, value: str, *, max_age: int) -> None:
    """The response carries a long-lived cookie of this browser's own (HttpOnly, SameSite=Lax,
    path /, Secure over https): the known devices, the remembered identifier."""
    secure = current_app.extensions["idp.settings"].is_https

    @after_this_request
    def set_cookie(response):
        response.set_cookie(
            name, value, max_age=max_age, httponly=True, secure=secure, samesite="Lax", path="/"
        )
        return response
