"""App-wide error handling for logins: one handler for a throttled request.

A view that shows a form declares, before the guarded call, how its page looks when the
attempt is refused for now (``when_throttled``); the handler adds the message and the real
``Retry-After``. Script calls get JSON (``{"error": "throttled", "message": ...}``), and a login
whose second-step answers ran out starts again at the password. Like warehouse's one exception
view for its rate limiters: views never catch ``ThrottledError``.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, g, jsonify
from flask_babel import ngettext

from idp.auth.policy import wants_json
from idp.ratelimit import ThrottledError

LOGIN_LIMITER = "2fa.login"


def throttled_message(seconds: int) -> str:
    return ngettext(
        "Too many attempts. Try again in %(num)d second.",
        "Too many attempts. Try again in %(num)d seconds.",
        seconds,
    )


def when_throttled(respond: Callable[[str], object]) -> None:
    """How this request's page answers a throttled attempt; ``respond(message)``."""
    g.idp_when_throttled = respond


def init_app(app: Flask, *, restart: Callable[[], object]) -> None:
    """``restart`` renders the password page after a login ran out of second-step answers."""

    @app.errorhandler(ThrottledError)
    def throttled(error: ThrottledError):
        if error.blocks(LOGIN_LIMITER):
            return restart()
        message = throttled_message(error.retry_after)
        respond = g.get("idp_when_throttled")
        if respond is not None:
            response = app.make_response(respond(message))
        elif wants_json():
            response = jsonify(error="throttled", message=message)
        else:
            from idp.auth.error_pages import render_error

            html, _status = render_error(message, 429, code="throttled")
            response = Response(html)
        if response.status_code == 200:  # a redirect (back to another host) stays one
            response.status_code = 429
        response.headers["Retry-After"] = str(error.retry_after)
        return response
