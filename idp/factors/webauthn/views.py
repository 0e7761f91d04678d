"""WebAuthn pages: second factor, passkey login, enrolment and the account's keys.

Thin: services decide, these views turn typed errors into pages or JSON. Option endpoints are
POSTs (global CSRF protection: static/js/webauthn.js sends X-CSRFToken) and keep the id of the
challenge they issued in the login state (one piece per purpose), which binds it to this
browser.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _

from idp import challenges
from idp.auth import assurance, enrolment, flow
from idp.auth.contract import (
    Attempt,
    LastFactorError,
    LoginRestartError,
    MethodError,
    NoSuchEnrolmentError,
)
from idp.auth.error_pages import render_error
from idp.auth.errors import when_throttled
from idp.auth.forms import EmptyForm, PasswordLoginForm
from idp.auth.orchestrator import orchestrator
from idp.auth.policy import Policy, binding_acr, current_auth, policy
from idp.auth.views import (
    after_first_factor,
    after_login,
    complete_login,
    current_client,
    current_practitioner,
    first_factor_practitioner,
    login_context,
    offered_factors,
    required_acr,
    restart_login_page,
)
from idp.db import get_db
from idp.factors.webauthn import enrolment as keys
from idp.factors.webauthn import verify as wa
from idp.factors.webauthn.forms import CredentialForm, CredentialNameForm, NewCredentialForm
from idp.factors.webauthn.method import (
    PASSKEY,
    REGISTER,
    SECOND_FACTOR,
    NoCredentialError,
    RegistrationRefusedError,
    RelyingParty,
    WebAuthnMethod,
)
from idp.models import Practitioner
from idp.services import clock, methods, settings

bp = Blueprint("webauthn", __name__)


def relying_party() -> RelyingParty:
    return RelyingParty.from_settings(settings())


def method() -> WebAuthnMethod:
    return methods()["webauthn"]


def binding(practitioner: Practitioner, *, session_acr: str | None) -> Attempt:
    """Binding a new key to ``practitioner`` from a login at ``session_acr`` (None: invited)."""
    return Attempt(
        client=current_client(),
        now=clock().now(),
        practitioner_id=practitioner.id,
        context={"rp": relying_party(), "session_acr": session_acr},
    )


def registration_answer(form) -> dict:
    return {
        "credential": form.credential.data,
        "challenge_id": take_challenge(REGISTER),
        "name": form.name.data or _("Security key"),
    }


def attempt(practitioner: Practitioner | None, *, login: str | None = None) -> Attempt:
    """A login attempt for this browser: after ``practitioner``'s password, or a passkey."""
    return Attempt(
        client=current_client(),
        now=clock().now(),
        practitioner_id=practitioner.id if practitioner is not None else None,
        login=login,
        required_acr=required_acr,
        context={"rp": relying_party()},
    )


def take_challenge(purpose: str) -> str | None:
    """The id issued to this browser for ``purpose``; a second use finds nothing."""
    state = flow.state()
    challenge_id = state.step(purpose).get("challenge")
    state.drop_step(purpose)
    return challenge_id


def keep_challenge(purpose: str, challenge_id: str) -> None:
    flow.state().set_step(purpose, {"challenge": challenge_id})


def drop_previous_challenge(purpose: str) -> None:
    challenges.discard(get_db(), challenge_id=take_challenge(purpose))


def options_response(options_json: str) -> Response:
    return Response(options_json, mimetype="application/json")


def json_error(code: str, message: str, status: int) -> Response:
    """Script calls get ``{"error": code, "message": text}``, like the throttle's answer."""
    response = jsonify(error=code, message=message)
    response.status_code = status
    return response


def login_failure(error: MethodError) -> tuple[str, int]:
    """The practitioner-facing reason for a refused assertion (by its code), and its status."""
    return method().message(error), error.status


def registration_failure(error: Exception) -> tuple[str, int]:
    if isinstance(error, wa.MalformedCredentialError):
        return _("The response from your security key could not be read. Try again."), 400
    if isinstance(error, challenges.ChallengeError):
        return _("This request has expired. Try again."), 400
    if isinstance(error, keys.DuplicateCredentialError):
        return _("This security key is already registered."), 409
    if isinstance(error, keys.BindingLevelError):
        return _("To add this key, first sign in with one of your security keys."), 403
    if isinstance(error, keys.InvalidNameError):
        return _("Give the key a name of at most 64 characters."), 400
    if isinstance(error, wa.AttestationNotAllowedError):
        return _("This model of security key is not accepted. Use a certified key."), 400
    if isinstance(error, wa.UserVerificationMissingError):
        return _(
            "The key did not verify your identity (PIN, fingerprint or face). Try again and "
            "complete the verification."
        ), 400
    return _("The key could not be registered. Try again."), 400


# --------------------------------------------------------------------------- second factor


def render_second_factor(form, offered: list[str], *, error: str | None = None, status=200):
    context = {"other_factors": [f for f in offered if f != "webauthn"]}
    return render_template("login_webauthn.html", form=form, error=error, **context), status


def finish_login(form, *, purpose: str, practitioner: Practitioner | None) -> flow.Authentication:
    """Verify the assertion against this session's challenge; None: a passkey names its owner."""
    login = flow.state().first_factor.login if practitioner is not None else None
    answer = {"credential": form.credential.data, "challenge_id": take_challenge(purpose)}
    return orchestrator().authenticate(
        get_db(), method(), attempt(practitioner, login=login), answer
    )


@bp.route("/login/webauthn", methods=["GET", "POST"])
@policy(Policy.FIRST_FACTOR, get_changes_state=False)
def login():
    practitioner = first_factor_practitioner()
    offered = offered_factors(practitioner)  # once per request: one query per method
    if "webauthn" not in offered:
        return redirect(url_for("auth.second_factor"))
    form = CredentialForm()
    if not form.validate_on_submit():
        return render_second_factor(form, offered, status=400 if request.method == "POST" else 200)
    when_throttled(lambda message: render_second_factor(form, offered, error=message)[0])
    try:
        authentication = finish_login(form, purpose=SECOND_FACTOR, practitioner=practitioner)
    except LoginRestartError:
        return restart_login_page()
    except MethodError as exc:
        message, status = login_failure(exc)
        return render_second_factor(form, offered, error=message, status=status)
    complete_login(authentication)
    return after_login()


@bp.post("/login/webauthn/options")
@policy(Policy.FIRST_FACTOR)
def login_options():
    practitioner = first_factor_practitioner()
    drop_previous_challenge(SECOND_FACTOR)
    try:
        started = orchestrator().begin(get_db(), method(), attempt(practitioner))
    except NoCredentialError as exc:
        return json_error(exc.code, *login_failure(exc))
    keep_challenge(SECOND_FACTOR, started["challenge_id"])
    return options_response(started["options"])


# --------------------------------------------------------------------------- passkey


def render_login_error(message: str, status: int):
    form = PasswordLoginForm(formdata=None)
    return render_template("login.html", form=form, error=message, **login_context()), status


@bp.post("/login/passkey/options")
@policy(Policy.PUBLIC)
def passkey_options():
    drop_previous_challenge(PASSKEY)
    started = orchestrator().begin(get_db(), method(), attempt(None))
    keep_challenge(PASSKEY, started["challenge_id"])
    return options_response(started["options"])


@bp.post("/login/passkey")
@policy(Policy.PUBLIC)
def passkey_login():
    """Passwordless: a discoverable credential with user verification is two factors alone."""
    form = CredentialForm()
    if not form.validate_on_submit():
        return render_login_error(_("The passkey sign-in was incomplete. Try again."), 400)
    when_throttled(lambda message: render_login_error(message, 429)[0])
    try:
        authentication = finish_login(form, purpose=PASSKEY, practitioner=None)
    except MethodError as exc:
        return render_login_error(*login_failure(exc))
    complete_login(authentication)
    return after_login()


# --------------------------------------------------------------------------- invitation


def enrolling_practitioner() -> Practitioner | None:
    """The invited practitioner finishing their own invitation (see accounts.views.enrol)."""
    found = flow.current_enrolment(get_db(), now=clock().now())
    return found[0] if found else None


@bp.post("/enrol/webauthn/options")
@policy(Policy.FIRST_FACTOR)
def enrol_options():
    practitioner = enrolling_practitioner()
    if practitioner is None:
        return json_error("expired", _("This request has expired. Try again."), 400)
    return registration_options(practitioner, session_acr=None)


def registration_options(practitioner: Practitioner, *, session_acr: str | None) -> Response:
    drop_previous_challenge(REGISTER)
    db = get_db()
    try:
        started = method().begin_enrol(db, binding(practitioner, session_acr=session_acr))
    except keys.BindingLevelError as exc:
        return json_error("binding_level", registration_failure(exc)[0], 403)
    db.commit()
    keep_challenge(REGISTER, started["challenge_id"])
    return options_response(started["options"])


@bp.post("/enrol/webauthn")
@policy(Policy.FIRST_FACTOR)
def enrol():
    """Invitation step 2 with a security key or passkey instead of an authenticator app.

    The credential and the invitation's acceptance are one transaction: a refused acceptance
    leaves no credential behind.
    """
    db = get_db()
    found = flow.current_enrolment(db, now=clock().now())
    form = NewCredentialForm()
    if found is None or not form.validate_on_submit():
        return redirect(url_for("auth.login"))
    practitioner, invitation = found

    codes: list[str] = []

    def accept() -> None:
        enrolment.accept_invitation(db, invitation=invitation, now=clock().now(), codes=codes)

    try:
        bound = orchestrator().enrol(
            db,
            method(),
            binding(practitioner, session_acr=None),
            registration_answer(form),
            within=accept,
        )
    except RegistrationRefusedError as exc:
        message, status = registration_failure(exc.cause)
        return render_error(message, status)
    except enrolment.InvitationInvalidError:
        db.rollback()
        message = _("This invitation link is invalid or has expired. Ask for a new one.")
        return render_error(message, 409)
    credential = bound.record
    amr = wa.amr_for(uv=True, hardware_bound=credential.hardware_bound, with_password=True)
    complete_login(
        flow.Authentication(practitioner.id, tuple(amr), bound.level, methods=("webauthn",))
    )
    return after_first_factor(codes)


# --------------------------------------------------------------------------- account


def step_up_for_binding(practitioner_id: int, acr: str):
    """NIST-10: confirm with a factor at ``acr`` (an existing key), then come back here. The
    session stays as it was until that confirmation succeeds."""
    flow.state().require_step_up(practitioner_id, acr, then=url_for("webauthn.add"))
    return redirect(url_for("auth.reauthenticate"), code=303)


def render_add(form, *, error: str | None = None, status: int = 200):
    return render_template("webauthn_add.html", form=form, error=error), status


@bp.route("/account/webauthn/add", methods=["GET", "POST"])
@policy(Policy.RECENT_STRONG, get_changes_state=True, limited_ok=True)  # a step-up, for them only
def add():
    practitioner = current_practitioner()
    db = get_db()
    if request.method == "GET":
        try:
            keys.check_binding_level(
                db,
                practitioner_id=practitioner.id,
                new_level=assurance.PHISHING_RESISTANT,
                session_acr=binding_acr(current_auth()),
            )
        except keys.BindingLevelError as exc:
            return step_up_for_binding(practitioner.id, exc.required_acr)
    form = NewCredentialForm()
    if not form.validate_on_submit():
        return render_add(form, status=400 if request.method == "POST" else 200)
    attempt = binding(practitioner, session_acr=binding_acr(current_auth()))
    try:
        orchestrator().enrol(db, method(), attempt, registration_answer(form))
    except RegistrationRefusedError as exc:
        message, status = registration_failure(exc.cause)
        return render_add(form, error=message, status=status)
    return redirect(url_for("accounts.home", done="added"), code=303)


@bp.post("/account/webauthn/add/options")
@policy(Policy.RECENT_STRONG, limited_ok=True)
def add_options():
    return registration_options(current_practitioner(), session_acr=binding_acr(current_auth()))


@bp.post("/account/webauthn/<int:credential_id>/rename")
@policy(Policy.RECENT_STRONG)
def rename(credential_id: int):
    form = CredentialNameForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        keys.rename_credential(
            get_db(),
            practitioner=current_practitioner(),
            credential_id=credential_id,
            name=form.name.data,
        )
    except keys.NoSuchCredentialError:
        abort(404)
    except keys.InvalidNameError:
        abort(400)
    return redirect(url_for("accounts.home", done="renamed"), code=303)


@bp.post("/account/webauthn/<int:credential_id>/remove")
@policy(Policy.RECENT_STRONG)
def remove(credential_id: int):
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        orchestrator().remove(
            get_db(), method(), current_practitioner().id, credential_id, now=clock().now()
        )
    except LastFactorError:
        return render_error(_("You cannot remove your last factor."), 409)
    except NoSuchEnrolmentError:
        abort(404)
    return redirect(url_for("accounts.home", done="removed"), code=303)
