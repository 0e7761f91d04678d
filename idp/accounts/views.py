"""Account pages and invitation enrolment."""

from __future__ import annotations

import segno
from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from idp.accounts import service
from idp.accounts.smartcard_service import listed_cards
from idp.accounts.webauthn_service import listed_credentials
from idp.auth import assurance
from idp.auth.forms import CodeForm, EmptyForm, NewPasswordForm
from idp.auth.service import Authentication, active_totp_devices
from idp.auth.views import after_login, complete_login
from idp.db import get_db
from idp.factors import totp
from idp.models import Practitioner, TotpDevice
from idp.policy import Policy, current_auth, policy
from idp.services import cipher, clock, settings

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
        devices=active_totp_devices(get_db(), practitioner.id),
        credentials=listed_credentials(get_db(), practitioner_id=practitioner.id),
        cards=listed_cards(get_db(), practitioner_id=practitioner.id),
        now=clock().now(),
        auth=current_auth(),
        form=EmptyForm(),
    )


def qr_svg(uri: str) -> str:
    return segno.make(uri, error="m").svg_data_uri(scale=5)


def render_totp_setup(template: str, device: TotpDevice, form, error=None, status=200, **ctx):
    practitioner = get_db().get(Practitioner, device.practitioner_id)
    secret = service.pending_secret(device, cipher())
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
        service.confirm_totp_enrolment(
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
        device, _secret = service.start_totp_enrolment(
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
        service.remove_totp_device(db, practitioner=me(), device_id=device_id, clock=clock())
    except service.LastFactorError:
        return render_template("error.html", message=_("You cannot remove your last factor.")), 409
    except service.AccountError:
        abort(404)
    db.commit()
    return redirect(url_for("accounts.home"), code=303)


@bp.route("/enrol/<token>", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=False)
def enrol(token: str):
    """Invitation link: choose a password; the next step binds an authenticator app."""
    db = get_db()
    try:
        invitation = service.find_invitation(db, token=token, clock=clock())
    except service.InvitationInvalidError:
        message = _("This invitation link is invalid or has expired. Ask for a new one.")
        return render_template("error.html", message=message), 404
    practitioner = db.get(Practitioner, invitation.practitioner_id)
    form = NewPasswordForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("enrol.html", form=form, practitioner=practitioner), status
    service.set_password(db, practitioner=practitioner, password=form.password.data)
    device, _secret = service.start_totp_enrolment(
        db, practitioner=practitioner, name=_("Authenticator app"), clock=clock(), cipher=cipher()
    )
    db.commit()
    session.clear()
    session["first_factor"] = {"pid": practitioner.id, "at": clock().now().timestamp()}
    session["enrolment"] = {"invitation": invitation.id, "device": device.id}
    session.rotate()
    return redirect(url_for("accounts.enrol_totp"), code=303)


@bp.route("/enrol/totp", methods=["GET", "POST"])
@policy(Policy.FIRST_FACTOR, get_changes_state=False)
def enrol_totp():
    db = get_db()
    enrolment = session.get("enrolment") or {}
    device = db.get(TotpDevice, enrolment.get("device") or 0)
    if device is None or device.practitioner_id != session["first_factor"]["pid"]:
        return redirect(url_for("auth.login"))
    form = CodeForm()
    if not form.validate_on_submit():
        return render_totp_setup("enrol_totp.html", device, form)
    error = confirm_code(device, form)
    if error:
        return render_totp_setup("enrol_totp.html", device, form, error=error, status=400)
    invitation = db.execute(
        select(service.Invitation).where(service.Invitation.id == enrolment["invitation"])
    ).scalar_one()
    try:
        practitioner = service.accept_invitation(db, invitation=invitation, clock=clock())
    except service.InvitationInvalidError:
        db.rollback()
        message = _("This invitation link is invalid or has expired. Ask for a new one.")
        return render_template("error.html", message=message), 409
    db.commit()
    session.pop("enrolment", None)
    complete_login(Authentication(practitioner.id, ("pwd", "otp", "mfa"), assurance.SUBSTANTIAL))
    return after_login()
