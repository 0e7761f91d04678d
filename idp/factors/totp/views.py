"""Authenticator app pages: the code at sign-in, adding and removing an app, the invitation's
first app. Thin: the method and the orchestrator decide."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_babel import gettext as _

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
from idp.auth.forms import EmptyForm
from idp.auth.orchestrator import orchestrator
from idp.auth.policy import Policy, current_auth, policy
from idp.auth.views import (
    after_first_factor,
    after_login,
    complete_login,
    first_factor_practitioner,
    invitation_invalid,
    offered_factors,
    restart_login_page,
    second_step_attempt,
)
from idp.db import get_db
from idp.factors.totp import method as service
from idp.factors.totp import verify as totp
from idp.factors.totp.forms import CodeForm
from idp.models import Practitioner, TotpDevice
from idp.services import cipher, clock, methods, settings

bp = Blueprint("totp", __name__)
KIND = "totp"


def qr_svg(uri: str) -> str:
    import segno  # only for an enrolment page: not loaded by every worker at start

    return segno.make(uri, error="m").svg_data_uri(scale=5)


def render_setup(template: str, device: TotpDevice, form, error=None, status=200, **ctx):
    practitioner = get_db().get(Practitioner, device.practitioner_id)
    secret = service.pending_secret(device, cipher())
    uri = totp.provisioning_uri(
        secret=secret, account_name=practitioner.email, issuer_name=settings().issuer_name
    )
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    body = render_template(template, form=form, qr=qr_svg(uri), secret=grouped, error=error, **ctx)
    return body, status


def pending_device(practitioner_id: int) -> TotpDevice | None:
    """The app being added in this login, for this practitioner, not yet confirmed."""
    device_id = flow.state().step(KIND).get("device")
    return methods()[KIND].pending_device(get_db(), practitioner_id, device_id)


def confirm_code(device: TotpDevice, form, *, within=None) -> str | None:
    """Confirm a pending seed (and whatever ``within`` adds to the same unit of work);
    returns an error message, or None once it is active and committed."""
    attempt = Attempt(client=None, now=clock().now(), practitioner_id=device.practitioner_id)
    answer = {"device": device.id, "code": form.code.data}
    try:
        orchestrator().enrol(get_db(), methods()[KIND], attempt, answer, within=within)
    except MethodError:
        form.code.data = ""  # a wrong code is cleared, never left to be sent again
        return _("Incorrect code. Check the code shown in your app and try again.")
    return None


@bp.route("/login/totp", methods=["GET", "POST"])
@policy(Policy.FIRST_FACTOR, get_changes_state=False)
def login():
    practitioner = first_factor_practitioner()
    form = CodeForm()
    if not form.validate_on_submit():
        return login_page(practitioner, form, status=400 if request.method == "POST" else 200)
    when_throttled(lambda message: login_page(practitioner, form, error=message))
    try:
        authentication = orchestrator().authenticate(
            get_db(), methods()[KIND], second_step_attempt(practitioner), {"code": form.code.data}
        )
    except LoginRestartError:
        return restart_login_page()
    except MethodError as exc:
        # One answer for every wrong code: wrong, already used, or valid only at another time.
        form.code.data = ""
        return login_page(practitioner, form, error=methods().message(exc.code), status=401)
    complete_login(authentication)  # the orchestrator checked the level the login requires
    return after_login()


def login_page(practitioner: Practitioner, form, *, error: str | None = None, status: int = 200):
    """The code page, with links to the practitioner's other methods; none without an app
    that reaches the level this login requires (the page of methods says what to do)."""
    offered = offered_factors(practitioner)
    if KIND not in offered:
        return redirect(url_for("auth.second_factor"))
    others = [f for f in offered if f != KIND]
    return render_template("login_totp.html", form=form, error=error, other_factors=others), status


@bp.route("/account/totp/add", methods=["GET", "POST"])
@policy(Policy.RECENT_STRONG, get_changes_state=False, limited_ok=True)
def add():
    """A GET shows the pending key, or a button: the new (unconfirmed) key is made by a POST."""
    practitioner_id = current_auth().practitioner_id
    db = get_db()
    device = pending_device(practitioner_id)
    if device is None:
        if request.method == "GET":
            return render_template("totp_start.html", form=EmptyForm())
        device, _secret = service.start_totp_enrolment(
            db,
            practitioner=db.get(Practitioner, practitioner_id),
            name=_("Authenticator app"),
            clock=clock(),
            cipher=cipher(),
        )
        db.commit()
        flow.state().set_step(KIND, {"device": device.id})
    if request.method == "GET" or "code" not in request.form:  # shown, not yet confirmed
        return render_setup("totp_setup.html", device, CodeForm(formdata=None))
    form = CodeForm()
    if not form.validate_on_submit():
        return render_setup("totp_setup.html", device, form)
    error = confirm_code(device, form)
    if error:
        return render_setup("totp_setup.html", device, form, error=error, status=400)
    flow.state().drop_step(KIND)
    return redirect(url_for("accounts.home", done="added"), code=303)


@bp.post("/account/totp/<int:device_id>/remove")
@policy(Policy.RECENT_STRONG)
def remove(device_id: int):
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    practitioner_id = current_auth().practitioner_id
    try:
        orchestrator().remove(
            get_db(), methods()[KIND], practitioner_id, device_id, now=clock().now()
        )
    except LastFactorError:
        return render_error(_("You cannot remove your last factor."), 409)
    except NoSuchEnrolmentError:
        abort(404)
    return redirect(url_for("accounts.home", done="removed"), code=303)


@bp.route("/enrol/totp", methods=["GET", "POST"])
@policy(Policy.FIRST_FACTOR, get_changes_state=False)
def enrol():
    """The invitation's second step: confirm the app whose seed the password step made."""
    db = get_db()
    found = flow.current_enrolment(db, now=clock().now())
    if found is None:
        return redirect(url_for("auth.login"))
    practitioner, invitation = found
    device = pending_device(practitioner.id)
    if device is None:
        return redirect(url_for("auth.login"))
    form = CodeForm()
    if not form.validate_on_submit():
        return render_setup("enrol_totp.html", device, form)
    codes: list[str] = []
    try:
        error = confirm_code(
            device,
            form,
            within=lambda: enrolment.accept_invitation(
                db, invitation=invitation, now=clock().now(), codes=codes
            ),
        )
    except enrolment.InvitationInvalidError:
        db.rollback()
        return invitation_invalid(409)
    if error:
        return render_setup("enrol_totp.html", device, form, error=error, status=400)
    complete_login(
        flow.Authentication(practitioner.id, service.AMR, assurance.SUBSTANTIAL, methods=(KIND,))
    )
    return after_first_factor(codes)
