""" "Remember my identifier on this computer": the RPPS number in a cookie, and nothing else.

Set when a password step succeeds with the box ticked, deleted when it succeeds with the box
clear, or on request ("Forget this identifier"). It holds the practitioner's RPPS number (even
when they typed their email address): never the password, a name or a session. It only fills
the login form in: whatever it says, the password and the second step are still asked, so it is
neither signed nor trusted; a value that is not an RPPS number is ignored.
"""

from __future__ import annotations

import re

from flask import after_this_request, current_app, request

from idp.auth.devices import set_browser_cookie

COOKIE_MAX_AGE = 180 * 24 * 3600
RPPS = re.compile(r"[0-9]{11}")


def cookie_name() -> str:
    """``__Host-`` under https, like the session cookie: only this host, path /, Secure."""
    return "__Host-idp_identifier" if _is_https() else "idp_identifier"


def _is_https() -> bool:
    return current_app.extensions["idp.settings"].is_https


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and RPPS.fullmatch(value) is not None


def remembered_identifier() -> str | None:
    """The RPPS number this browser remembers, or None (absent, or not an RPPS number)."""
    value = request.cookies.get(cookie_name())
    return value if is_identifier(value) else None


def remember(rpps: str) -> None:
    """The response carries the cookie; ``rpps`` is the practitioner's, already checked."""
    if not is_identifier(rpps):
        return
    set_browser_cookie(cookie_name(), rpps, max_age=COOKIE_MAX_AGE)


def forget() -> None:
    """The response deletes the cookie, if this browser sent one (valid or not)."""
    if cookie_name() not in request.cookies:
        return

    @after_this_request
    def delete_cookie(response):
        response.delete_cookie(
            cookie_name(), path="/", secure=_is_https(), httponly=True, samesite="Lax"
        )
        return response
