"""Security headers on every response."""

from __future__ import annotations

from flask import Flask, Response, request

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
NO_STORE_PREFIXES = (
    "/login",
    "/token",
    "/authorize",
    "/account",
    "/enrol",
    "/userinfo",
    "/logout",
    "/smartcard",
)


SECURITY_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    # same-origin, not no-referrer: under https the CSRF check requires a same-site
    # Referer on form posts, and other sites still learn nothing from our URLs.
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
HSTS = ("Strict-Transport-Security", "max-age=63072000; includeSubDomains")


def init_app(app: Flask) -> None:
    wanted = SECURITY_HEADERS + ((HSTS,) if app.extensions["idp.settings"].is_https else ())

    @app.after_request
    def add_headers(response: Response) -> Response:
        """Each header unless the view set its own. The names present are read once: a
        lookup of a missing name in Werkzeug's headers raises and catches an exception."""
        headers = response.headers
        present = {name.lower() for name, _value in headers.items()}
        for name, value in wanted:
            if name.lower() not in present:
                headers.add(name, value)
        if request.path.startswith(NO_STORE_PREFIXES) or request.endpoint is None:
            headers["Cache-Control"] = "no-store"
            headers["Pragma"] = "no-cache"
        return response
