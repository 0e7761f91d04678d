"""Login pages: identifier + password, then the second factor. Thin: services decide."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask_babel import gettext as _

from idp import audit
from idp.auth import assurance, devices, flow, service
from idp.auth.contract import Attempt, MethodError
from idp.auth.devices import Client
from idp.auth.forms import CodeForm, EmptyForm, PasswordLoginForm
from idp.db import get_db
from idp.models import Practitioner, PractitionerStatus
from idp.oauth.views import resume_url
from idp.policy import Policy, policy
from idp.ratelimit import ThrottledError
from idp.services import client_address, clock, methods, orchestrator, throttle

bp = Blueprint("auth", __name__)


def client_ip() -> str:
    return client_address()


def throttled_page(template: str, form, retry_after: int, **context):
    message = _("Too many attempts. Try again in %(seconds)d seconds.", seconds=retry_after)
    body = render_template(template, form=form, error=message, **context)
    return body, 429, {"Retry-After": str(retry_after)}


def current_client() -> Client:
    """The attempt's address and the accounts this browser already logged in to."""
    return devices.current_client(client_ip())


def complete_login(authentication: service.Authentication) -> None:
    flow.complete_login(get_db(), authentication, now=clock().now())


def restart_login_page():
    """After too many wrong second-step answers: the login starts again at the password."""
    flow.restart_login()
    error = _("Too many incorrect attempts. Sign in again with your password.")
    form = PasswordLoginForm(formdata=None)
    return render_template("login.html", form=form, error=error, **login_context()), 401


def after_login():
    target = resume_url() or session.pop("next", None) or url_for("accounts.home")
    if not target.startswith("/") or target.startswith("//"):
        target = url_for("accounts.home")
    return redirect(target, code=303)


def pending_request() -> dict:
    return session.get("authz") or {}


def login_context() -> dict:
    """What login.html shows around the forms (also rendered by the passkey login view)."""
    return {
        "client_name": pending_request().get("client_name"),
        "step_up": bool(session.get("step_up")),
        "standalone_methods": standalone_methods(),
        "requires_high": pending_request().get("acr") == assurance.HIGH,
    }


def standalone_methods() -> list:
    """Methods that are a whole login by themselves (the card): offered on the login page."""
    return [method for method in methods() if method.standalone]


@bp.route("/login", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=False)
def login():
    form = PasswordLoginForm()
    if request.method == "GET" and pending_request().get("login_hint"):
        form.identifier.data = pending_request()["login_hint"]
    context = login_context()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("login.html", form=form, **context), status
    flow.begin_attempt()
    try:
        practitioner = service.check_password(
            get_db(),
            identifier=form.identifier.data,
            password=form.password.data,
            client=current_client(),
            throttle=throttle(),
        )
    except ThrottledError as exc:
        return throttled_page("login.html", form, exc.retry_after, **context)
    except service.InvalidCredentialsError:
        error = _("Incorrect identifier or password.")
        return render_template("login.html", form=form, error=error, **context), 401
    except service.AccountUnavailableError as exc:
        if str(exc) == PractitionerStatus.INVITED:
            error = _("Your account is not activated yet: finish with your invitation link.")
        else:
            error = _("This account is suspended. Contact your administrator.")
        return render_template("login.html", form=form, error=error, **context), 403
    flow.begin_login(practitioner.id, now=clock().now())
    return redirect(url_for("auth.second_factor"), code=303)


def first_factor_practitioner() -> Practitioner:
    return get_db().get(Practitioner, flow.first_factor()["pid"])


def required_acr(practitioner_id: int | None) -> str | None:
    """The level this login must reach: the client's acr_values, or a pending step-up that
    binding a new authenticator asked for (NIST-10) when it concerns this practitioner."""
    levels = [pending_request().get("acr")]
    step_up = session.get("step_up") or {}
    if practitioner_id is not None and step_up.get("pid") == practitioner_id:
        levels.append(step_up.get("acr"))
    known = [level for level in levels if level in assurance.RANKS]
    return max(known, key=assurance.rank) if known else None


def second_step_attempt(practitioner: Practitioner) -> Attempt:
    """An answer after this practitioner's password, in the login in progress."""
    return Attempt(
        client=current_client(),
        now=clock().now(),
        practitioner_id=practitioner.id,
        login=flow.first_factor()["login"],
        required_acr=required_acr,
    )


def offered_factors(practitioner: Practitioner) -> list[str]:
    """Methods the practitioner has that reach the required level, strongest first."""
    return methods().offered(
        get_db(), practitioner.id, required_acr=required_acr(practitioner.id), now=clock().now()
    )


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


@bp.route("/login/totp", methods=["GET", "POST"])
@policy(Policy.FIRST_FACTOR, get_changes_state=False)
def login_totp():
    practitioner = first_factor_practitioner()
    if "totp" not in offered_factors(practitioner):
        return redirect(url_for("auth.second_factor"))
    form = CodeForm()
    context = {"other_factors": [f for f in offered_factors(practitioner) if f != "totp"]}
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("login_totp.html", form=form, **context), status
    try:
        authentication = orchestrator().authenticate(
            get_db(), methods()["totp"], second_step_attempt(practitioner), {"code": form.code.data}
        )
    except ThrottledError as exc:
        if exc.blocks("2fa.login"):
            return restart_login_page()
        return throttled_page("login_totp.html", form, exc.retry_after, **context)
    except service.LoginRestartError:
        return restart_login_page()
    except MethodError as exc:
        # One answer for every wrong code: wrong, already used, or valid only at another time.
        error = methods().message(exc.code)
        form.code.data = ""
        return render_template("login_totp.html", form=form, error=error, **context), 401
    complete_login(authentication)
    return after_login()


@bp.get("/login/reauthenticate")
@policy(Policy.AUTHENTICATED, get_changes_state=False)
def reauthenticate():
    """Sensitive changes need a login from the last minutes: the sign-in form, saying why.

    It changes nothing: the login is replaced only once the password (or a passkey, or the
    card) is checked, so a link from another site cannot end a session."""
    form = PasswordLoginForm()
    practitioner = get_db().get(Practitioner, session["auth"]["pid"])
    form.identifier.data = practitioner.rpps
    context = login_context()
    return render_template("login.html", form=form, reauthenticate=True, **context)


@bp.route("/logout", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=False)
def logout():
    form = EmptyForm()
    if request.method == "POST" and form.validate_on_submit():
        auth = session.get("auth")
        if auth:
            audit.record(get_db(), "auth:session:logout", practitioner_id=auth["pid"])
            get_db().commit()
        session.destroy()
        return render_template("logged_out.html")
    return render_template("logout.html", form=form)
