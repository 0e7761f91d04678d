"""Strong-authentication OpenID Connect provider for healthcare practitioners."""

from __future__ import annotations

import importlib

from flask import Flask, jsonify, request
from flask_babel import format_date, format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError, CSRFProtect

from idp import db, headers, i18n, wsgi_input
from idp.auth import assurance, policy
from idp.clock import SystemClock
from idp.config import Settings, check_keys, load_settings
from idp.crypto import DataCipher, Passwords, derive_key
from idp.factors.smartcard.trust import CrlStoreUnavailableError
from idp.ratelimit import ThrottleUnavailableError
from idp.redaction import redact_path
from idp.resources import resource_dir
from idp.sessions import DatabaseStore, RedisStore, ServerSessionInterface

csrf = CSRFProtect()
CLIENT_PATHS = frozenset(("/token", "/userinfo", "/jwks.json", "/.well-known/openid-configuration"))
"""Called by applications, never by a browser's sign-in: no browser session there."""


class IdPFlask(Flask):
    def log_exception(self, exc_info) -> None:
        """Flask's, with the path redacted: it may be an invitation token or a card code."""
        self.logger.error(
            "Exception on %s [%s]", redact_path(request.path), request.method, exc_info=exc_info
        )


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app. ``test_config`` may hold SETTINGS (a Settings) and CLOCK."""
    test_config = dict(test_config or {})
    settings: Settings = test_config.pop("SETTINGS", None) or _settings_from_environment()
    check_keys(settings)
    app = IdPFlask(
        __name__,
        template_folder=str(resource_dir("templates")),
        instance_path=str(settings.instance_path),
    )
    app.config.update(
        SECRET_KEY=derive_key(settings.secret_key, "flask"),
        MAX_CONTENT_LENGTH=256 * 1024,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the server-side session
        WTF_CSRF_SSL_STRICT=settings.is_https,
        PREFERRED_URL_SCHEME="https" if settings.is_https else "http",
        BABEL_DEFAULT_TIMEZONE=settings.time_zone,  # dates as the practitioner reads them
    )
    app.config.update(test_config)
    app.extensions["idp.settings"] = settings
    app.extensions["idp.clock"] = test_config.get("CLOCK") or SystemClock()
    app.extensions["idp.cipher"] = DataCipher(settings.data_key)
    app.extensions["idp.passwords"] = Passwords(
        time_cost=settings.argon2_time_cost,
        memory_kib=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )
    db.init_app(app, settings.database_url, pool_size=settings.threads + 1)
    if settings.redis_url:
        import redis

        app.extensions["idp.redis"] = redis.Redis.from_url(settings.redis_url)
        store = RedisStore(app.extensions["idp.redis"])
    else:
        store = DatabaseStore(app)
    app.session_interface = ServerSessionInterface(store, sessionless=CLIENT_PATHS)
    csrf.init_app(app)
    i18n.init_app(app)
    headers.init_app(app)
    policy.init_app(app)
    wsgi_input.init_app(app)
    _register_blueprints(app)
    _register_error_pages(app)
    app.context_processor(lambda: {"display_name": settings.issuer_name})
    app.jinja_env.globals["describe_login"] = assurance.describe
    app.jinja_env.globals["signed_in"] = lambda: policy.current_auth() is not None
    app.jinja_env.filters["day"] = lambda value: format_date(value, "long")
    app.jinja_env.filters["moment"] = lambda value: format_datetime(value, "d MMMM y, HH:mm")
    return app


def _settings_from_environment() -> Settings:
    """``load_settings`` knows no factor: each factor that reads its own settings adds them
    (its package's ``configure``)."""
    from idp.factors import INSTALLED

    settings = load_settings()
    for name in INSTALLED:
        configure = getattr(importlib.import_module(name), "configure", None)
        if configure is not None:
            settings = configure(settings)
    return settings


def _register_blueprints(app: Flask) -> None:
    from idp.accounts.recovery_views import bp as recovery_bp
    from idp.accounts.reset_views import bp as password_reset_bp
    from idp.accounts.views import bp as accounts_bp
    from idp.auth.registry import Registry
    from idp.auth.views import bp as auth_bp
    from idp.factors import INSTALLED
    from idp.oauth.server import create_server
    from idp.oauth.views import bp as oauth_bp
    from idp.views import bp as site_bp

    app.extensions["idp.oauth_server"] = create_server(app)
    csrf.exempt(oauth_bp)  # client endpoints; the consent POST checks its token itself
    for blueprint in (site_bp, auth_bp, accounts_bp, recovery_bp, password_reset_bp, oauth_bp):
        app.register_blueprint(blueprint)
    methods = (importlib.import_module(name).install(app, csrf) for name in INSTALLED)
    app.extensions["idp.methods"] = Registry(m for m in methods if m is not None)
    app.jinja_env.globals["methods"] = app.extensions["idp.methods"]


def _register_error_pages(app: Flask) -> None:
    from idp.auth.error_pages import render_error

    @app.errorhandler(CSRFError)
    def csrf_error(_error):
        message = _("The form expired or was sent from elsewhere. Reload the page and try again.")
        return render_error(message, 400, code="csrf")

    def unavailable(_error):
        """Shared counters or CRLs out of reach: fail closed, in the caller's language."""
        message = _("The service is temporarily unavailable. Try again in a moment.")
        if request.path.startswith("/smartcard/") or policy.wants_json():
            response = jsonify(error="unavailable", message=message)
            response.status_code = 503
            return response
        return render_error(message, 503, code="unavailable")

    from idp.auth import errors
    from idp.auth.views import restart_login_page

    errors.init_app(app, restart=restart_login_page)
    app.register_error_handler(ThrottleUnavailableError, unavailable)
    app.register_error_handler(CrlStoreUnavailableError, unavailable)

    for status, code, text in (
        (
            400,
            "bad_request",
            _l("The request is malformed. Go back to the application and start again."),
        ),
        (
            404,
            "not_found",
            _l("This page does not exist. Check the address, or go to your account."),
        ),
        (
            405,
            "method_not_allowed",
            _l("This page cannot be used this way. Go back to the previous page and start again."),
        ),
        (
            413,
            "too_large",
            _l("The request is too large. Send less at a time, or tell your support."),
        ),
        (
            500,
            "internal",
            _l(
                "An unexpected error occurred. Try again later; if it happens again, "
                "tell your support the reference below."
            ),
        ),
    ):
        app.register_error_handler(status, _error_page(status, code, text))


def _error_page(status: int, code: str, text: str):
    def handler(_error):
        from idp.auth.error_pages import render_error

        return render_error(str(text), status, code=code)

    return handler
