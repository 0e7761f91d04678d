"""French first, English on request (visible switch, then Accept-Language)."""

from __future__ import annotations

from flask import Flask, request
from flask_babel import Babel, get_locale

LANGUAGES = ("fr", "en")
LANG_COOKIE = "idp_lang"

babel = Babel()


def select_locale() -> str:
    chosen = request.args.get("lang") or request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or "fr"


def init_app(app: Flask) -> None:
    babel.init_app(app, locale_selector=select_locale, default_locale="fr")
    app.jinja_env.globals["get_locale"] = get_locale

    @app.after_request
    def remember_choice(response):
        chosen = request.args.get("lang")
        if chosen in LANGUAGES:
            response.set_cookie(LANG_COOKIE, chosen, samesite="Lax", max_age=365 * 86400)
        return response
