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


def init_app(app: Flask) -> None:
    is_https = app.extensions["idp.settings"].is_https

    @app.after_request
    def add_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        # same-origin, not no-referrer: under https the CSRF check requires a same-site
        # Referer on form posts, and other sites still learn nothing from our URLs.
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if request.path.startswith(NO_STORE_PREFIXES) or request.endpoint is None:
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        if is_https:
            response.headers.setdefault(
                "Strict-Transport-Security", "max-age=63072000; includeSubDomains"
            )
        return response
