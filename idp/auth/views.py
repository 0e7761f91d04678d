"""Login pages: identifier + password, then the second factor. Thin: services decide."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException

from idp import audit
from idp.auth import assurance, devices, flow, remember
from idp.auth.contract import AccountUnavailableError, Attempt
from idp.auth.devices import Client
from idp.auth.error_pages import render_error
from idp.auth.errors import when_throttled
from idp.auth.forms import EmptyForm, PasswordLoginForm
from idp.auth.orchestrator import orchestrator
from idp.auth.password import PASSWORD, InvalidCredentialsError
from idp.auth.policy import (
    FORCED_CHANGE_PAGE,
    Policy,
    current_auth,
    password_change_pending,
    policy,
)
from idp.db import get_db
from idp.models import Practitioner, PractitionerStatus
from idp.redaction import mask_identifier
from idp.services import client_address, clock, methods

bp = Blueprint("auth", __name__)

LEVEL_REASONS = {
    assurance.PHISHING_RESISTANT: _l(
        "%(client)s requires a phishing-resistant sign-in: a security key, a passkey or a CPS card."
    ),
    assurance.HIGH: _l("%(client)s requires a CPS card or a certified security key."),
}


def client_ip() -> str:
    return client_address()


def throttled_page(template: str, form, retry_after: int, **context):
    message = _("Too many attempts. Try again in %(seconds)d seconds.", seconds=retry_after)
    body = render_template(template, form=form, error=message, **context)
    return body, 429, {"Retry-After": str(retry_after)}


def current_client() -> Client:
    """The attempt's address and the accounts this browser already logged in to."""
    return devices.current_client(client_ip())


def complete_login(authentication: flow.Authentication) -> None:
    """The factor succeeded: the login completes, except in a password reset for this
    practitioner, where it only proves the factor (``after_login`` then leads to the new
    password, and the practitioner signs in with it afterwards)."""
    state = flow.state()
    reset = state.password_reset
    if reset is not None and reset.practitioner_id == authentication.practitioner_id:
        state.prove_password_reset()
        return
    flow.complete_login(get_db(), authentication, now=clock().now())
    devices.remember_device(authentication.practitioner_id)


def restart_login_page():
    """After too many wrong second-step answers: the login starts again at the password."""
    flow.state().restart()
    error = _("Too many incorrect attempts. Sign in again with your password.")
    form = PasswordLoginForm(formdata=None)
    prefill(form)
    return render_template("login.html", form=form, error=error, **login_context()), 401


def resume_url() -> str | None:
    """Back to the application's authorization request, if one is pending."""
    pending = pending_request()
    if pending is None:
        return None
    return url_for("oauth.authorize") + "?" + urlencode([tuple(p) for p in pending.params])


KEPT_REQUEST_ANSWER = "idp.kept_request_answer"
"""The app extension that may answer the application's kept request at the end of a login,
without sending the browser back to it (the OpenID provider registers it: auth knows no
OAuth). It returns a response, or None when the request needs more than the login."""


def after_login():
    reset = flow.state().password_reset
    if reset is not None and reset.proven:
        return redirect(url_for("password_reset.choose"), code=303)
    if password_change_pending():  # "This wasn't me": a new password before anything else
        return redirect(url_for(FORCED_CHANGE_PAGE), code=303)
    answer = current_app.extensions.get(KEPT_REQUEST_ANSWER)
    if answer is not None and pending_request() is not None:
        response = answer()
        if response is not None:
            return response
    target = resume_url() or flow.state().take_next() or url_for("accounts.home")
    if not target.startswith("/") or target.startswith("//"):
        target = url_for("accounts.home")
    return redirect(target, code=303)


def after_first_factor(codes: list[str]):
    """After an invitation's first factor: the recovery codes issued with it are shown once
    (kept in the login state until that page shows them), then the login goes on."""
    limited = methods().limited_method()
    if not codes or limited is None:
        return after_login()
    flow.state().set_step(limited.kind, {"codes": list(codes)})
    return redirect(url_for(limited.new_codes_endpoint), code=303)


def limited_choice():
    """The limited method (recovery codes) when this login may go on with it: after a
    password, for a practitioner with unused codes; never to confirm a signed-in practitioner
    or to reach a step-up's level, never during an invitation's enrolment."""
    limited = methods().limited_method()
    state = flow.state()
    first = state.first_factor
    if limited is None or first is None or state.enrolment is not None:
        return None
    if state.confirmation is not None or state.step_up_for(first.practitioner_id) is not None:
        return None
    if limited.remaining(get_db(), first.practitioner_id) == 0:
        return None
    return limited


@bp.record_once
def register_limited_choice(setup_state) -> None:
    """A global, not a context value: the macros of ``_switch.html`` are imported without
    the template's context."""
    setup_state.app.jinja_env.globals["limited_choice"] = limited_choice


def pending_request() -> flow.PendingRequest | None:
    return flow.state().pending_request


def login_context() -> dict:
    """What login.html shows around the forms (also rendered by the passkey login view).

    An application asking for a phishing-resistant level gets its explanation and the
    methods that reach it first; the password (then a key) comes after."""
    pending = pending_request()
    return {
        "client_name": pending.client_name if pending else None,
        "step_up": flow.state().step_up is not None,
        "standalone_methods": standalone_methods(),
        "requires_high": pending is not None and pending.acr == assurance.HIGH,
        "level_reason": level_reason(pending),
        "remembered_identifier": remember.remembered_identifier(),
    }


def level_reason(pending: flow.PendingRequest | None) -> str | None:
    """ "<application> requires ...": why a stronger method than a code is asked, or None."""
    reason = LEVEL_REASONS.get(pending.acr) if pending is not None else None
    return str(reason) % {"client": pending.client_name} if reason is not None else None


def standalone_methods() -> list:
    """Methods that are a whole login by themselves (the card): offered on the login page."""
    return [method for method in methods() if method.standalone]


def prefill(form: PasswordLoginForm) -> None:
    """The identifier of a new login form: the application's login_hint, else the one this
    browser remembers (its box then stays ticked, and the focus goes to the password)."""
    pending = pending_request()
    hint = pending.login_hint if pending is not None else None
    remembered = remember.remembered_identifier()
    form.identifier.data = hint or remembered
    form.remember.data = remembered is not None and form.identifier.data == remembered


@bp.route("/login", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=False)
def login():
    form = PasswordLoginForm()
    if request.method == "GET":
        prefill(form)
    context = login_context()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("login.html", form=form, **context), status
    flow.state().begin_attempt()
    answer = {"identifier": form.identifier.data, "password": form.password.data}
    attempt = Attempt(client=current_client(), now=clock().now())
    when_throttled(
        lambda message: render_template("login.html", form=form, error=message, **context)
    )
    try:
        verified = orchestrator().authenticate(get_db(), PASSWORD, attempt, answer)
    except InvalidCredentialsError:
        error = _("Incorrect identifier or password.")
        return render_template("login.html", form=form, error=error, **context), 401
    except AccountUnavailableError as exc:
        if exc.account_status == PractitionerStatus.INVITED:
            error = _("Your account is not activated yet: finish with your invitation link.")
        else:
            error = _("This account is suspended. Contact your administrator.")
        return render_template("login.html", form=form, error=error, **context), 403
    flow.state().begin_login(verified.practitioner_id, now=clock().now())
    practitioner = get_db().get(Practitioner, verified.practitioner_id)
    if form.remember.data:
        remember.remember(practitioner.rpps)
    else:
        remember.forget()
    return redirect(second_step_url(practitioner), code=303)


@bp.post("/login/forget")
@policy(Policy.PUBLIC)
def forget_identifier():
    """ "Forget this identifier": the browser's cookie goes; a login in progress stays."""
    if not EmptyForm().validate_on_submit():
        abort(400)
    remember.forget()
    return redirect(url_for("auth.login"), code=303)


@bp.get("/login/help")
@policy(Policy.PUBLIC, get_changes_state=False)
def help_page():
    """What to do when a factor is lost. The pending request stays in the login state, so
    the way back is a plain link to the login page."""
    pending = pending_request()
    return render_template(
        "login_help.html",
        client_name=pending.client_name if pending else None,
        recovery_url=recovery_url(),
    )


def recovery_url() -> str | None:
    """The recovery-code page, when this login may go on with a code."""
    limited = limited_choice()
    return url_for(limited.login_endpoint) if limited is not None else None


def current_practitioner() -> Practitioner:
    """The practitioner of this browser's completed login."""
    return get_db().get(Practitioner, current_auth().practitioner_id)


def invitation_invalid(status: int):
    message = _("This invitation link is invalid or has expired. Ask for a new one.")
    return render_error(message, status, code="invitation_invalid")


def first_factor_practitioner() -> Practitioner:
    return get_db().get(Practitioner, flow.state().first_factor.practitioner_id)


@dataclass(frozen=True)
class SigningIn:
    """Who the steps after the password are for, as every such page shows it."""

    name: str
    rpps: str
    """Masked: enough to recognise one's own account, not to learn someone else's."""


def signing_in() -> SigningIn | None:
    """The practitioner whose password this login checked, or None before the password.

    The one place the second-step pages (``_who.html``) learn who is signing in: templates
    call it (``signing_in()``), only when they show it."""
    first = flow.state().first_factor
    if first is None:
        return None
    practitioner = get_db().get(Practitioner, first.practitioner_id)
    if practitioner is None:
        return None
    return SigningIn(
        name=f"{practitioner.given_name} {practitioner.family_name}",
        rpps=mask_identifier(practitioner.rpps),
    )


@bp.app_context_processor
def signing_in_context() -> dict:
    return {"signing_in": signing_in}


@bp.post("/login/restart")
@policy(Policy.PUBLIC)
def restart():
    """ "Not you?": the login in progress ends, the application's request stays, and the
    sign-in starts again at the password. On a confirmation the session it was for is
    someone else's (a shared workstation): it is signed out too."""
    if not EmptyForm().validate_on_submit():
        abort(400)
    state = flow.state()
    first = state.first_factor
    confirming = state.confirmation is not None
    if first is not None:
        audit.record(get_db(), "auth:login:restarted", practitioner_id=first.practitioner_id)
        if confirming:  # someone else's session on this computer: it ends here
            completed = state.completed
            audit.record(
                get_db(),
                "auth:session:logout",
                practitioner_id=completed.practitioner_id,
                sid=completed.sid,
            )
        get_db().commit()
        # The identifier this browser remembers is forgotten when it names the person who
        # is "not you": the next login page must not offer it again.
        abandoned = get_db().get(Practitioner, first.practitioner_id)
        if abandoned is not None and abandoned.rpps == remember.remembered_identifier():
            remember.forget()
    state.restart(sign_out=confirming)
    return redirect(url_for("auth.login"), code=303)


def required_acr(practitioner_id: int | None) -> str | None:
    """The level this login must reach: the client's acr_values, or a pending step-up that
    binding a new authenticator asked for (NIST-10) when it concerns this practitioner."""
    reset = flow.state().password_reset
    if reset is not None and reset.practitioner_id == practitioner_id:
        return None  # any factor of theirs proves a reset; the application's level comes after
    pending = pending_request()
    levels = [pending.acr if pending else None]
    step_up = flow.state().step_up_for(practitioner_id)
    if step_up is not None:
        levels.append(step_up.acr)
    known = [level for level in levels if level in assurance.RANKS]
    return max(known, key=assurance.rank) if known else None


def second_step_attempt(practitioner: Practitioner) -> Attempt:
    """An answer after this practitioner's password, in the login in progress."""
    return Attempt(
        client=current_client(),
        now=clock().now(),
        practitioner_id=practitioner.id,
        login=flow.state().first_factor.login,
        required_acr=required_acr,
    )


def offered_factors(practitioner: Practitioner) -> list[str]:
    """Methods the practitioner has that reach the required level, strongest first."""
    return methods().offered(
        get_db(), practitioner.id, required_acr=required_acr(practitioner.id), now=clock().now()
    )


def second_step_url(practitioner: Practitioner) -> str:
    """Straight to the default method's page (one redirect fewer after the password), or to
    the page that explains there is none."""
    factors = offered_factors(practitioner)
    if not factors:
        return url_for("auth.second_factor")
    return url_for(methods()[methods().default_choice(factors)].login_endpoint)


@bp.route("/login/second-factor", methods=["GET"])
@policy(Policy.FIRST_FACTOR, get_changes_state=False)
def second_factor():
    factors = offered_factors(first_factor_practitioner())
    if not factors:
        context = {
            "has_request": bool(pending_request()),
            "standalone_methods": standalone_methods(),
        }
        return render_template("no_factor.html", **context), 403
    return redirect(url_for(methods()[methods().default_choice(factors)].login_endpoint))


@bp.get("/login/methods")
@policy(Policy.FIRST_FACTOR, get_changes_state=False)
def choose_method():
    """ "Try another method": every method this login may continue with, the default first."""
    factors = offered_factors(first_factor_practitioner())
    if not factors:
        return redirect(url_for("auth.second_factor"))
    default = methods().default_choice(factors)
    ordered = [default] + [kind for kind in factors if kind != default]
    return render_template("login_methods.html", choices=[methods()[kind] for kind in ordered])


REASONS_BY_ACTION = {
    "webauthn.add": _l("To add a security key or passkey, confirm that it is you."),
    "totp.add": _l("To set up an authenticator app, confirm that it is you."),
}


def confirmation_reason(auth, pending: flow.PendingRequest | None) -> str:
    """Why this practitioner, already signed in, is asked to confirm: in their words."""
    if flow.state().step_up_for(auth.practitioner_id) is not None:
        return _("To add this key, first confirm with one of your security keys or passkeys.")
    if pending is not None and not assurance.satisfies(auth.acr, [pending.acr or ""]):
        reason = level_reason(pending)
        if reason is not None:
            return reason
    action = endpoint_of(flow.state().peek_next())
    return str(
        REASONS_BY_ACTION.get(action, _l("This change needs you to confirm that it is you."))
    )


def endpoint_of(path: str | None) -> str | None:
    if not path:
        return None
    try:
        endpoint, _args = current_app.url_map.bind("").match(path.partition("?")[0], "GET")
    except HTTPException:
        return None
    return endpoint


@bp.get("/login/reauthenticate")
@policy(Policy.AUTHENTICATED, get_changes_state=True)  # opens a confirmation, ends nothing
def reauthenticate():
    """One short page for a signed-in practitioner who must confirm with a factor: a change
    that needs a recent login, a key that needs a stronger one (NIST-10), an application that
    asks for a higher level. Why, the factors they have that reach the level, and Cancel.

    The GET opens a confirmation for the signed-in practitioner only (a link from another
    site can do no more than that): the session stays as it was until a factor confirms, and
    NIST SP 800-63B (section 7.2) allows a single factor to reauthenticate within a session."""
    auth = current_auth()
    flow.state().begin_confirmation(auth.practitioner_id, now=clock().now())
    pending = pending_request()
    offered = offered_factors(current_practitioner())
    context = {
        "reason": confirmation_reason(auth, pending),
        "offered": offered,
        "client_name": pending.client_name if pending else None,
    }
    return render_template("reauthenticate.html", **context)


@bp.post("/login/reauthenticate/cancel")
@policy(Policy.PUBLIC)
def cancel_confirmation():
    """Cancel on the confirmation page: the step goes, the session stays, back to the account.
    (With an application waiting, the page's Cancel answers it instead: ``oauth.cancel``.)"""
    if not EmptyForm().validate_on_submit():
        abort(400)
    flow.state().abandon()
    return redirect(url_for("accounts.home"), code=303)


@bp.route("/logout", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=False)
def logout():
    form = EmptyForm()
    if request.method == "POST" and form.validate_on_submit():
        auth = current_auth()
        if auth:
            audit.record(
                get_db(), "auth:session:logout", practitioner_id=auth.practitioner_id, sid=auth.sid
            )
            get_db().commit()
        flow.state().end()
        return render_template("logged_out.html")
    return render_template("logout.html", form=form)
