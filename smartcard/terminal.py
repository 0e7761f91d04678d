"""Terminal mode: sign a login started in a browser, identified by a short code.

Used where no bridge can run (locked-down browsers, remote desktops). The agent signs only a
challenge whose origin is the issuer the practitioner typed, so a look-alike server cannot
borrow the card for another site.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from smartcard import errors
from smartcard.protocol import (
    CODE_PATH,
    CODE_PATTERN,
    DEFAULT_MECHANISM,
    ProtocolError,
    origin_of,
    parse_signing_request,
)
from smartcard.token import Now, sign_payload, utc_now

HTTP_TIMEOUT = 15
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def terminal_login(
    *,
    issuer: str,
    code: str,
    lib: Any,
    pin: str,
    token_label: str | None = None,
    mechanism: str = DEFAULT_MECHANISM,
    now: Now = utc_now,
    http: requests.Session | None = None,
) -> dict[str, Any]:
    """Fetch the challenge for ``code``, sign it on the card, post the answer; returns the reply."""
    url = code_url(issuer=issuer, code=code)
    http = http or requests.Session()
    try:
        request = parse_signing_request(_exchange(http.get, url))
    except ProtocolError as exc:
        raise errors.ServerError(str(exc)) from exc
    if request.origin != origin_of(issuer):
        raise errors.OriginMismatchError(f"{request.origin} ≠ {origin_of(issuer)}")
    answer = sign_payload(
        lib=lib,
        pin=pin,
        payload=request.payload(),
        mechanism=mechanism,
        token_label=token_label,
        now=now,
    )
    body = answer.to_json() | {"code": code}
    return _exchange(http.post, url, json=body)


def code_url(*, issuer: str, code: str) -> str:
    """``{issuer}/smartcard/code/{code}``; only HTTPS, except loopback for development."""
    if not CODE_PATTERN.fullmatch(code):
        raise errors.ServerError("code de connexion invalide / invalid login code")
    try:
        origin = origin_of(issuer)
    except ProtocolError as exc:
        raise errors.ServerError(str(exc)) from exc
    if not origin.startswith("https://") and not origin.startswith(
        tuple(f"http://{host}" for host in LOOPBACK_HOSTS)
    ):
        raise errors.ServerError("HTTPS requis / HTTPS required")
    return issuer.rstrip("/") + CODE_PATH.format(code=quote(code, safe=""))


def _exchange(method: Any, url: str, **kwargs: Any) -> dict[str, Any]:
    """One HTTP call whose failures, of any kind, read as a server error to the practitioner."""
    try:
        response = method(url, timeout=HTTP_TIMEOUT, allow_redirects=False, **kwargs)
    except requests.RequestException as exc:
        raise errors.ServerError(type(exc).__name__) from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise errors.ServerError(f"HTTP {response.status_code}")
    if response.status_code >= 400:
        message = body.get("message") or body.get("error") or f"HTTP {response.status_code}"
        raise errors.ServerError(str(message))
    return body
