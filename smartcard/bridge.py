"""Local HTTP bridge so the IdP login page can ask the card for a signature.

It listens on 127.0.0.1 only and answers one configured IdP origin only: any other page on the
workstation's browser gets a 403 and no CORS headers. ``Host`` is checked as well, so DNS
rebinding cannot pass another site off as localhost. The PIN in a ``/sign`` request goes to
``C_Login`` and nowhere else: never logged, never stored, never echoed.

Error codes (``{"error": code, "message": text}``): ``forbidden_origin`` and ``forbidden_host``
403, ``not_found`` 404, ``bad_request`` 400, ``unsupported_media_type`` 415, ``payload_too_large``
413, ``pin_incorrect`` 401, ``pin_locked`` 423, ``no_reader``/``no_card``/``module_unavailable``
503, ``card_removed`` 409, ``certificate_expired`` and other card refusals 422.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from smartcard import errors
from smartcard.certinfo import CertificateInfoError, load_certificate, read_certificate_info
from smartcard.protocol import (
    DEFAULT_BRIDGE_PORT,
    DEFAULT_MECHANISM,
    MAX_MESSAGE_BYTES,
    SIGN_PATH,
    STATUS_PATH,
    ProtocolError,
    origin_of,
    parse_signing_request,
)
from smartcard.token import (
    Now,
    list_tokens,
    read_auth_certificate,
    sign_payload,
    utc_now,
)

LOCAL_ADDRESS = "127.0.0.1"
PREFLIGHT_MAX_AGE = "600"
log = logging.getLogger(__name__)

ERROR_STATUS = {
    errors.PinLockedError: HTTPStatus.LOCKED,
    errors.NoReaderError: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.NoTokenError: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.ModuleLoadError: HTTPStatus.SERVICE_UNAVAILABLE,
    errors.CardRemovedError: HTTPStatus.CONFLICT,
    errors.PinFormatError: HTTPStatus.BAD_REQUEST,
}


@dataclass
class BridgeConfig:
    """What the bridge serves: one IdP origin, one PKCS#11 library, one card."""

    origin: str
    lib: Any
    token_label: str | None = None
    mechanism: str = DEFAULT_MECHANISM
    now: Now = utc_now
    card_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if origin_of(self.origin) != self.origin:
            raise ValueError(f"origin must be scheme://host[:port], got {self.origin!r}")


class BridgeRequestError(Exception):
    """A request the bridge refuses before touching the card."""

    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def make_bridge_server(
    *, config: BridgeConfig, port: int = DEFAULT_BRIDGE_PORT
) -> ThreadingHTTPServer:
    """Bound to 127.0.0.1 (``port=0`` picks a free one); call ``serve_forever`` to run."""
    handler = type("BoundBridgeHandler", (BridgeHandler,), {"config": config})
    server = ThreadingHTTPServer((LOCAL_ADDRESS, port), handler)
    server.daemon_threads = True
    return server


def serve_bridge(*, config: BridgeConfig, port: int = DEFAULT_BRIDGE_PORT) -> None:
    server = make_bridge_server(config=config, port=port)
    log.info("bridge listening on http://%s:%d for %s", LOCAL_ADDRESS, port, config.origin)
    try:
        server.serve_forever()
    finally:
        server.server_close()


class BridgeHandler(BaseHTTPRequestHandler):
    config: BridgeConfig
    server_version = "idp-smartcard"
    sys_version = ""

    def do_OPTIONS(self) -> None:  # noqa: N802 (http.server naming)
        self._handle(self._preflight)

    def do_GET(self) -> None:  # noqa: N802
        self._handle(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._handle(self._post)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Request lines only, at debug level: bodies (and so PINs) are never logged."""
        log.debug("%s - %s", self.address_string(), format % args)

    def _handle(self, action: Callable[[], None]) -> None:
        try:
            self._check_host()
            self._check_origin()
            action()
        except BridgeRequestError as exc:
            self._send_error(exc.status, exc.code, exc.message)
        except errors.PinIncorrectError as exc:
            tries = {"count_low": exc.count_low, "final_try": exc.final_try}
            self._send_error(HTTPStatus.UNAUTHORIZED, exc.code, str(exc), **tries)
        except errors.SmartcardError as exc:
            status = ERROR_STATUS.get(type(exc), HTTPStatus.UNPROCESSABLE_ENTITY)
            self._send_error(status, exc.code, str(exc))

    def _preflight(self) -> None:
        self.send_response(HTTPStatus.NO_CONTENT)
        self._cors_headers()
        self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type")
        self.send_header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE)
        if self.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
            self.send_header("Access-Control-Allow-Private-Network", "true")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _get(self) -> None:
        if self.path != STATUS_PATH:
            raise BridgeRequestError(HTTPStatus.NOT_FOUND, "not_found", "unknown path")
        self._send_json(HTTPStatus.OK, self._status())

    def _post(self) -> None:
        if self.path != SIGN_PATH:
            raise BridgeRequestError(HTTPStatus.NOT_FOUND, "not_found", "unknown path")
        body = self._read_json()
        pin = body.pop("pin", None)
        try:
            request = parse_signing_request(body)
        except ProtocolError as exc:
            raise BridgeRequestError(HTTPStatus.BAD_REQUEST, "bad_request", str(exc)) from exc
        if request.origin != self.config.origin:
            raise BridgeRequestError(
                HTTPStatus.FORBIDDEN, "origin_mismatch", "signed origin is not the IdP's"
            )
        if not isinstance(pin, str):
            raise errors.PinFormatError()
        with self.config.card_lock:
            answer = sign_payload(
                lib=self.config.lib,
                pin=pin,
                payload=request.payload(),
                mechanism=self.config.mechanism,
                token_label=self.config.token_label,
                now=self.config.now,
            )
        self._send_json(HTTPStatus.OK, answer.to_json())

    def _status(self) -> dict[str, Any]:
        with self.config.card_lock:
            try:
                tokens = list_tokens(lib=self.config.lib)
            except (errors.NoReaderError, errors.NoTokenError):
                tokens = []
            certificate = None
            if tokens:
                try:
                    der = read_auth_certificate(
                        lib=self.config.lib, token_label=self.config.token_label
                    )
                    certificate = read_certificate_info(load_certificate(der)).summary()
                except (errors.SmartcardError, CertificateInfoError):
                    certificate = None
        return {
            "token_present": bool(tokens),
            "tokens": [
                {"label": t.label, "serial": t.serial, "manufacturer": t.manufacturer}
                for t in tokens
            ],
            "certificate": certificate,
        }

    def _check_host(self) -> None:
        port = self.server.server_address[1]
        allowed = {f"{LOCAL_ADDRESS}:{port}", f"localhost:{port}"}
        if self.headers.get("Host", "").lower() not in allowed:
            raise BridgeRequestError(HTTPStatus.FORBIDDEN, "forbidden_host", "unexpected Host")

    def _check_origin(self) -> None:
        if self.headers.get("Origin") != self.config.origin:
            raise BridgeRequestError(
                HTTPStatus.FORBIDDEN, "forbidden_origin", "this bridge serves one IdP only"
            )

    def _read_json(self) -> dict[str, Any]:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise BridgeRequestError(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send JSON"
            )
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError as exc:
            raise BridgeRequestError(
                HTTPStatus.LENGTH_REQUIRED, "bad_request", "Content-Length required"
            ) from exc
        if length < 0 or length > MAX_MESSAGE_BYTES:
            raise BridgeRequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large", "body too large"
            )
        try:
            body = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError) as exc:
            raise BridgeRequestError(HTTPStatus.BAD_REQUEST, "bad_request", "invalid JSON") from exc
        if not isinstance(body, dict):
            raise BridgeRequestError(HTTPStatus.BAD_REQUEST, "bad_request", "expected an object")
        return body

    def _cors_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", self.config.origin)
        self.send_header("Vary", "Origin")

    def _send_json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self._cors_headers()
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, status: HTTPStatus, code: str, message: str, **extra: Any) -> None:
        """CORS headers only for the IdP: other pages cannot even read why they were refused."""
        data = json.dumps({"error": code, "message": message, **extra}).encode("utf-8")
        self.close_connection = True  # an unread body must not be parsed as the next request
        self.send_response(status)
        self.send_header("Connection", "close")
        if self.headers.get("Origin") == self.config.origin:
            self._cors_headers()
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
