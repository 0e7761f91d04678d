"""Pages of the account recovery (every factor lost): filing a request, the one-time link,
and cancelling from the account page. The logic is in ``idp.accounts.recovery``."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import HiddenField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Regexp

from idp.accounts import recovery
from idp.auth import flow
from idp.auth.error_pages import account_back, render_error
from idp.auth.forms import Form
from idp.auth.policy import Policy, current_auth, policy
from idp.db import get_db
from idp.ratelimit import key
from idp.services import client_address, clock, methods, settings, throttle

bp = Blueprint("account_recovery", __name__)

STEP = "account_recovery"
"""The opened link's request, kept server-side in the login state (never the token)."""


class RecoveryRequestForm(Form):
    rpps = StringField(
        _l("RPPS number"),
        validators=[
            DataRequired(message=_l("Enter your RPPS number.")),
            Length(min=11, max=11, message=_l("An RPPS number has 11 digits.")),
        ],
        render_kw={"autocomplete": "username", "inputmode": "numeric"},
    )
    email = StringField(
        _l("Email address registered with your account"),
        validators=[
            DataRequired(message=_l("Enter your email address.")),
            Regexp(r"^[^@\s]+@[^@\s]+$", message=_l("Enter a valid email address.")),
            Length(max=254, message=_l("This email address is too long.")),
        ],
        render_kw={"autocomplete": "email", "autocapitalize": "none", "spellcheck": "false"},
    )
    message = TextAreaField(
        _l("Message for the operators (optional)"),
        validators=[Length(max=1000, message=_l("Keep the message under 1000 characters."))],
    )


class CancelForm(Form):
    reference = HiddenField(validators=[DataRequired(), Length(max=20)])


def format_when(value) -> str:
    return format_datetime(value, "d MMMM y, HH:mm")


@bp.route("/login/recovery-request", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=False)
def request_form():
    """Every factor lost: ask for the account back. The same answer whatever matches."""
    form = RecoveryRequestForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("recovery_request.html", form=form), status
    throttle().reserve([key("recovery_request.ip", client_address())])
    reference = recovery.file_request(
        get_db(),
        rpps=form.rpps.data,
        email=form.email.data,
        message=form.message.data or "",
        now=clock().now(),
        secret=settings().secret_key,
        ip=client_address(),
        user_agent=request.user_agent.string,
    )
    return render_template("recovery_filed.html", reference=reference)


def link_invalid():
    message = _(
        "This recovery link is not valid: it was already used, the request was cancelled or "
        "denied, or it has expired. File a new request if you still cannot sign in."
    )
    return render_error(message, 404, code="recovery_link_invalid")


@bp.route("/recover/<token>", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=True)  # keeps the request in the session
def open_link(token: str):
    """The emailed link: keep the request server-side and leave the token out of every later
    URL, Referer and access log line (the page itself is ``/recover``)."""
    try:
        found = recovery.request_for_link(get_db(), token, now=clock().now())
    except recovery.LinkInvalidError:
        return link_invalid()
    flow.state().set_step(STEP, {"request_id": found.id})
    return redirect(url_for("account_recovery.link_page"), code=303)


@bp.route("/recover", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=False)
def link_page():
    """Before the delay: when the link will work. After: one button that starts the new
    enrolment (a POST: a mail scanner following the link changes nothing)."""
    db = get_db()
    now = clock().now()
    request_id = flow.state().step(STEP).get("request_id")
    try:
        found = recovery.usable_request(db, request_id, now=now)
    except recovery.LinkInvalidError:
        return link_invalid()
    form = Form()
    waiting = now < found.cooling_off_until
    if request.method == "POST" and form.validate_on_submit() and not waiting:
        try:
            invitation = recovery.complete(
                db,
                found.id,
                now=now,
                methods=methods(),
                sessions=current_app.session_interface.store,
            )
        except recovery.LinkInvalidError:
            return link_invalid()
        flow.state().open_invitation(invitation)
        return redirect(url_for("accounts.enrol"), code=303)
    status = 200 if request.method == "GET" else 400
    return (
        render_template(
            "recovery_link.html",
            form=form,
            waiting=waiting,
            until=format_when(found.cooling_off_until),
        ),
        status,
    )


@bp.post("/account/recovery/cancel")
@policy(Policy.AUTHENTICATED)
def cancel():
    """ "It wasn't me": a session signed in with a factor the practitioner still holds ends the
    recovery of their account."""
    form = CancelForm()
    if not form.validate_on_submit():
        return render_error(_("The form has expired. Try again."), 400, back=account_back())
    try:
        recovery.cancel(
            get_db(),
            form.reference.data,
            practitioner_id=current_auth().practitioner_id,
            now=clock().now(),
        )
    except recovery.RecoveryError:
        message = _("This recovery request is no longer open.")
        return render_error(message, 409, back=account_back())
    return render_template("recovery_cancelled.html")


@bp.app_context_processor
def banner():
    """For the account page's banner: the signed-in practitioner's open request, if any."""

    def open_recovery():
        auth = current_auth()
        if auth is None:
            return None
        found = recovery.open_request_for(get_db(), auth.practitioner_id, now=clock().now())
        if found is None:
            return None
        return {
            "reference": recovery.display(found.reference),
            "created_at": format_when(found.created_at),
            "form": CancelForm(reference=recovery.display(found.reference)),
        }

    return {"open_recovery": open_recovery}
