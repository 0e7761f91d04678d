"""Deny by default: every route declares who may call it, in one registry.

A view is registered with ``@policy(Policy.X)``; ``enforce`` runs before every request and
answers 404 for any endpoint without a declared policy. ``idp routes`` prints the inventory
and a test walks the URL map to fail on any undeclared route.

A route that answers GET also declares whether a GET may change state
(``get_changes_state``): any site can make a browser send a GET (a link, an image), so a GET
must only read, and every change is a POST with a CSRF token. The few GETs that write on
purpose (``/authorize`` keeps the pending request, the card login starts its transaction)
say so here; a test walks the URL map, fails on a GET route without the declaration, and
checks that the others leave the session and every table as they were.

A limited login (a recovery code: ``CompletedLogin.limited``) is decided here too, once: it
reaches only the routes declared ``limited_ok`` (binding a new factor, the recovery codes, the
recovery landing page); every other authenticated route sends it to the landing page. Inside
it the recovery code is the recent strong proof (NIST SP 800-63B lets a recovery code bind a
new authenticator), so the confirmation page (``auth.reauthenticate``, not ``limited_ok``) is
never reached from it: no recovery code confirms anything. It lasts ``LIMITED_SECONDS``.
Applications never see it: ``idp.oauth`` treats it as no login.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from enum import StrEnum

from flask import Flask, abort, jsonify, redirect, request, url_for
from flask_babel import gettext as _

from idp.auth.flow import CompletedLogin, LoginState

RECENT_STRONG_SECONDS = 5 * 60
FIRST_FACTOR_SECONDS = 10 * 60
LIMITED_SECONDS = 15 * 60
"""A recovery-code login ends this long after the code was given."""


class Policy(StrEnum):
    PUBLIC = "public"
    FIRST_FACTOR = "first-factor"  # second-step pages: the password was checked, nothing more
    AUTHENTICATED = "authenticated"  # full login (two factors)
    RECENT_STRONG = "recent-strong"  # full login within the last five minutes
    CLIENT = "client"  # OAuth client authentication, checked by the endpoint itself
    BEARER = "bearer"  # access token, checked by the endpoint itself
    DEVICE = "device"  # enrolled device signature
    ADMIN = "admin"


STATIC_ENDPOINTS = {"static": Policy.PUBLIC}
STATIC_GET_CHANGES_STATE = {"static": False}


def policy(
    value: Policy, *, get_changes_state: bool | None = None, limited_ok: bool = False
) -> Callable:
    """``get_changes_state`` is required (True or False) on every route that answers GET.
    ``limited_ok``: an AUTHENTICATED or RECENT_STRONG route a limited (recovery-code) login
    may reach (only what binds a new factor, the recovery codes and the recovery page)."""

    def decorate(view: Callable) -> Callable:
        view.access_policy = value
        view.get_changes_state = get_changes_state
        view.limited_ok = limited_ok
        return view

    return decorate


def endpoint_policy(app: Flask, endpoint: str | None) -> Policy | None:
    if endpoint is None:
        return None
    if endpoint in STATIC_ENDPOINTS:
        return STATIC_ENDPOINTS[endpoint]
    view = app.view_functions.get(endpoint)
    return getattr(view, "access_policy", None)


def endpoint_get_changes_state(app: Flask, endpoint: str | None) -> bool | None:
    """What the route declared about its GET; None when it declared nothing."""
    if endpoint in STATIC_GET_CHANGES_STATE:
        return STATIC_GET_CHANGES_STATE[endpoint]
    view = app.view_functions.get(endpoint) if endpoint else None
    return getattr(view, "get_changes_state", None)


def endpoint_limited_ok(app: Flask, endpoint: str | None) -> bool:
    view = app.view_functions.get(endpoint) if endpoint else None
    return bool(getattr(view, "limited_ok", False))


def limited_landing() -> str:
    """The page a limited login is sent to (the limited method's own)."""
    from idp.services import methods

    limited = methods().limited_method()
    return url_for(limited.landing_endpoint) if limited else url_for("auth.login")


def binding_acr(auth: CompletedLogin) -> str | None:
    """The level a signed-in practitioner binds a new factor from (NIST-10). A limited login
    binds at any level: its recovery code is the proof the person who lost their factors
    still has, and no factor of theirs could do better."""
    from idp.auth import assurance

    return assurance.HIGH if auth.limited else auth.acr


def route_inventory(app: Flask) -> list[tuple[str, str, str]]:
    rows = []
    for rule in app.url_map.iter_rules():
        methods = ",".join(sorted(m for m in rule.methods or () if m not in {"HEAD", "OPTIONS"}))
        found = endpoint_policy(app, rule.endpoint)
        rows.append((methods, rule.rule, found.value if found else "UNDECLARED"))
    return sorted(rows, key=lambda row: (row[1], row[0]))


def current_auth() -> CompletedLogin | None:
    """The completed login of this browser, if any."""
    return LoginState.current().completed


def wants_json() -> bool:
    """Script calls (WebAuthn options) ask for JSON: a login page would be unreadable there."""
    return request.accept_mimetypes.best == "application/json"


def json_denied():
    response = jsonify(error=_("Your session has expired. Reload the page to sign in again."))
    response.status_code = 401
    return response


def first_factor_is_fresh(now: dt.datetime) -> bool:
    """A password alone opens the second-step pages for a few minutes, not for the session."""
    first = LoginState.current().first_factor
    return first is not None and now.timestamp() - first.at <= FIRST_FACTOR_SECONDS


def account_is_active() -> bool:
    """A locked or disabled practitioner loses every open session at the next request."""
    auth = current_auth()
    if not auth:
        return False
    from idp.db import get_db
    from idp.models import Practitioner, PractitionerStatus

    practitioner = get_db().get(Practitioner, auth.practitioner_id)
    return practitioner is not None and practitioner.status == PractitionerStatus.ACTIVE


FORCED_CHANGE_PAGE = "accounts.required_password"
"""The one page a practitioner whose password must change can reach once signed in."""


def password_change_pending() -> bool:
    """The signed-in practitioner reported an event that was not them ("This wasn't me"):
    until they choose a new password, their login reaches nothing else, and no application
    gets a code or a token for them."""
    auth = current_auth()
    if not auth:
        return False
    from idp.db import get_db
    from idp.models import Practitioner

    practitioner = get_db().get(Practitioner, auth.practitioner_id)
    return practitioner is not None and practitioner.password_change_required


def init_app(app: Flask) -> None:
    @app.before_request
    def enforce():
        if request.endpoint is None:
            return None  # 404/405 handled by Flask
        declared = endpoint_policy(app, request.endpoint)
        if declared is None:
            abort(404)
        now = app.extensions["idp.clock"].now()
        if declared is Policy.FIRST_FACTOR and not first_factor_is_fresh(now):
            LoginState.current().end_first_factor()
            return json_denied() if wants_json() else redirect(url_for("auth.login"))
        if declared in (Policy.AUTHENTICATED, Policy.RECENT_STRONG) and not account_is_active():
            LoginState.current().forget_completed()
        if declared in (Policy.AUTHENTICATED, Policy.RECENT_STRONG) and not current_auth():
            if wants_json():
                return json_denied()
            LoginState.current().set_next(request.full_path if request.method == "GET" else None)
            return redirect(url_for("auth.login"))
        if declared in (Policy.AUTHENTICATED, Policy.RECENT_STRONG) and current_auth().limited:
            auth_time = dt.datetime.fromtimestamp(current_auth().auth_time, dt.UTC)
            if (now - auth_time).total_seconds() > LIMITED_SECONDS:
                LoginState.current().forget_completed()
                return json_denied() if wants_json() else redirect(url_for("auth.login"))
            if not endpoint_limited_ok(app, request.endpoint):
                return json_denied() if wants_json() else redirect(limited_landing())
            return None  # the recovery code is this login's recent strong proof
        if (
            declared in (Policy.AUTHENTICATED, Policy.RECENT_STRONG)
            and request.endpoint != FORCED_CHANGE_PAGE
            and password_change_pending()
        ):
            return json_denied() if wants_json() else redirect(url_for(FORCED_CHANGE_PAGE))
        if declared is Policy.RECENT_STRONG:
            auth_time = dt.datetime.fromtimestamp(current_auth().auth_time, dt.UTC)
            if (now - auth_time).total_seconds() > RECENT_STRONG_SECONDS:
                if wants_json():
                    return json_denied()
                LoginState.current().set_next(
                    request.full_path if request.method == "GET" else None
                )
                return redirect(url_for("auth.reauthenticate"))
        if declared in (Policy.DEVICE, Policy.ADMIN):
            abort(404)  # no such routes are served yet: nothing reaches them
        return None
