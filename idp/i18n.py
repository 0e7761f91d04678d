"""French first, English on request (visible switch, then Accept-Language)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from flask import Flask, Response, current_app, request, url_for
from flask_babel import Babel, get_locale

LANGUAGES = ("fr", "en")
LANG_COOKIE = "idp_lang"
LANG_COOKIE_MAX_AGE = 365 * 86400

babel = Babel()


def select_locale() -> str:
    chosen = request.args.get("lang") or request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or "fr"


def remember_language(response: Response, code: str) -> None:
    """The choice lives in the browser only: a long-lived cookie, never server state."""
    response.set_cookie(
        LANG_COOKIE,
        code,
        max_age=LANG_COOKIE_MAX_AGE,
        path="/",
        secure=current_app.extensions["idp.settings"].is_https,
        httponly=True,
        samesite="Lax",
    )


def same_site_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site (with its query string), else None.

    Refuses what a browser could read as another host: ``//host``, ``/\\host``, absolute
    URLs, any backslash or control character."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def with_language(target: str, code: str) -> str:
    """A page asked with ``?lang=`` would keep its language over the cookie: the switch
    rewrites that parameter, and leaves the query string untouched otherwise."""
    path, question, query = target.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name == "lang" for name, _value in pairs):
        return target
    pairs = [(name, code if name == "lang" else value) for name, value in pairs]
    return path + question + urlencode(pairs)


def current_page() -> str:
    """Where the switch comes back to: this page with its query string. A page answering a
    POST comes back to its address only (the form's content is not replayed)."""
    if request.method == "GET":
        return request.full_path.rstrip("?") if request.query_string else request.path
    return request.path


def switch_url(code: str) -> str:
    return url_for("site.language", code=code, next=same_site_path(current_page()))


def init_app(app: Flask) -> None:
    babel.init_app(app, locale_selector=select_locale, default_locale="fr")
    app.jinja_env.globals["get_locale"] = get_locale
    app.jinja_env.globals["language_switch_url"] = switch_url

    @app.after_request
    def remember_choice(response):
        if b"lang=" not in request.query_string:  # most requests: no query to parse
            return response
        chosen = request.args.get("lang")
        if chosen in LANGUAGES:
            remember_language(response, chosen)
        return response
