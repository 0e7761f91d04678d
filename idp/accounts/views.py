"""Account pages and invitation enrolment."""

from __future__ import annotations

import datetime as dt

import segno
from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_babel import gettext as _

from idp.accounts import service
from idp.auth import assurance, flow
from idp.auth.contract import LastFactorError, NoSuchEnrolmentError
from idp.auth.flow import Authentication
from idp.auth.forms import CodeForm, EmptyForm, NewPasswordForm
from idp.auth.views import after_login, complete_login
from idp.db import get_db
from idp.factors.totp import method as totp_method
from idp.factors.totp import verify as totp
from idp.models import Practitioner, TotpDevice
from idp.policy import Policy, current_auth, policy
from idp.services import cipher, clock, methods, orchestrator, settings

bp = Blueprint("accounts", __name__)


def me() -> Practitioner:
    return get_db().get(Practitioner, current_auth()["pid"])


@bp.get("/account")
@policy(Policy.AUTHENTICATED, get_changes_state=False)
def home():
    practitioner = me()
    return render_template(
        "account.html",
        practitioner=practitioner,
        profession=service.PROFESSIONS.get(practitioner.profession_code, ""),
        enrolments=methods().enrolments(get_db(), practitioner.id, now=clock().now()),
        now=clock().now(),
        auth=current_auth(),
        last_failure=format_timestamp(current_auth().get("last_failure")),
        form=EmptyForm(),
    )


def format_timestamp(value: float | None) -> str:
    if value is None:
        return ""
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def qr_svg(uri: str) -> str:
    return segno.make(uri, error="m").svg_data_uri(scale=5)


def render_totp_setup(template: str, device: TotpDevice, form, error=None, status=200, **ctx):
    practitioner = get_db().get(Practitioner, device.practitioner_id)
    secret = totp_method.pending_secret(device, cipher())
    uri = totp.provisioning_uri(
        secret=secret, account_name=practitioner.email, issuer_name=settings().issuer_name
    )
    grouped = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))
    body = render_template(template, form=form, qr=qr_svg(uri), secret=grouped, error=error, **ctx)
    return body, status


def pending_device(key: str, practitioner_id: int) -> TotpDevice | None:
    device_id = session.get(key)
    device = get_db().get(TotpDevice, device_id) if device_id else None
    if device is None or device.practitioner_id != practitioner_id or device.confirmed_at:
        return None
    return device


def confirm_code(device: TotpDevice, form) -> str | None:
    """Confirm a pending seed; returns an error message, or None once it is active."""
    try:
        totp_method.confirm_totp_enrolment(
            get_db(), device=device, code=form.code.data, clock=clock(), cipher=cipher()
        )
    except totp.TotpError:
        get_db().rollback()
        return _("Incorrect code. Check the code shown in your app and try again.")
    return None


@bp.route("/account/totp/add", methods=["GET", "POST"])
@policy(Policy.RECENT_STRONG, get_changes_state=False)
def add_totp():
    """A GET shows the pending key, or a button: the new (unconfirmed) key is made by a POST."""
    practitioner = me()
    db = get_db()
    device = pending_device("totp_pending", practitioner.id)
    if device is None:
        if request.method == "GET":
            return render_template("totp_start.html", form=EmptyForm())
        device, _secret = totp_method.start_totp_enrolment(
            db,
            practitioner=practitioner,
            name=_("Authenticator app"),
            clock=clock(),
            cipher=cipher(),
        )
        db.commit()
        session["totp_pending"] = device.id
    if request.method == "GET" or "code" not in request.form:  # shown, not yet confirmed
        return render_totp_setup("totp_setup.html", device, CodeForm(formdata=None))
    form = CodeForm()
    if not form.validate_on_submit():
        return render_totp_setup("totp_setup.html", device, form)
    error = confirm_code(device, form)
    if error:
        return render_totp_setup("totp_setup.html", device, form, error=error, status=400)
    db.commit()
    session.pop("totp_pending", None)
    return redirect(url_for("accounts.home"), code=303)


@bp.post("/account/totp/<int:device_id>/remove")
@policy(Policy.RECENT_STRONG)
def remove_totp(device_id: int):
    form = EmptyForm()
    if not form.validate_on_submit():
        abort(400)
    db = get_db()
    try:
        orchestrator().remove(db, methods()["totp"], me().id, device_id, now=clock().now())
    except LastFactorError:
        return render_template("error.html", message=_("You cannot remove your last factor.")), 409
    except NoSuchEnrolmentError:
        abort(404)
    return redirect(url_for("accounts.home"), code=303)


@bp.route("/enrol/<token>", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=True)  # keeps the invitation in the session
def open_invitation(token: str):
    """The emailed link: keep the invitation server-side, and leave the token out of every
    later URL, Referer and access log line (the enrolment page is ``/enrol``)."""
    try:
        invitation = service.find_invitation(get_db(), token=token, clock=clock())
    except service.InvitationInvalidError:
        return invitation_invalid(404)
    flow.open_invitation(invitation)
    return redirect(url_for("accounts.enrol"), code=303)


def invitation_invalid(status: int):
    message = _("This invitation link is invalid or has expired. Ask for a new one.")
    return render_template("error.html", message=message), status


@bp.route("/enrol", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=False)
def enrol():
    """Invitation, step 1: choose a password; the next step binds a second factor."""
    db = get_db()
    opened = flow.opened_invitation()
    found = flow.usable_invitation(
        db,
        invitation_id=opened.get("id"),
        practitioner_id=opened.get("pid"),
        now=clock().now(),
    )
    if found is None:
        return invitation_invalid(404)
    practitioner, invitation = found
    form = NewPasswordForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("enrol.html", form=form, practitioner=practitioner), status
    service.set_password(db, practitioner=practitioner, password=form.password.data)
    device, _secret = totp_method.start_totp_enrolment(
        db, practitioner=practitioner, name=_("Authenticator app"), clock=clock(), cipher=cipher()
    )
    db.commit()
    flow.begin_enrolment(invitation, now=clock().now(), device_id=device.id)
    return redirect(url_for("accounts.enrol_totp"), code=303)


@bp.route("/enrol/totp", methods=["GET", "POST"])
@policy(Policy.FIRST_FACTOR, get_changes_state=False)
def enrol_totp():
    db = get_db()
    enrolment = flow.current_enrolment(db, now=clock().now())
    device = db.get(TotpDevice, flow.enrolment_device_id() or 0)
    if enrolment is None or device is None or device.practitioner_id != enrolment[0].id:
        return redirect(url_for("auth.login"))
    practitioner, invitation = enrolment
    form = CodeForm()
    if not form.validate_on_submit():
        return render_totp_setup("enrol_totp.html", device, form)
    error = confirm_code(device, form)
    if error:
        return render_totp_setup("enrol_totp.html", device, form, error=error, status=400)
    try:
        service.accept_invitation(db, invitation=invitation, clock=clock())
    except service.InvitationInvalidError:
        db.rollback()
        return invitation_invalid(409)
    db.commit()
    complete_login(Authentication(practitioner.id, ("pwd", "otp", "mfa"), assurance.SUBSTANTIAL))
    return after_login()
