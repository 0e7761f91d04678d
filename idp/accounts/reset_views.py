"""'Forgot your password?': ask for a link, open it, prove a factor, choose a new password.

Thin: ``idp.accounts.password_reset`` decides. The factor step is the login's own second-step
pages (``idp.auth.views``): the opened link stands in for the password step there.
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from idp import audit
from idp.accounts import password_reset, passwords
from idp.auth import flow
from idp.auth.error_pages import Back, render_error
from idp.auth.errors import when_throttled
from idp.auth.forms import Form, NewPasswordForm
from idp.auth.policy import Policy, policy
from idp.auth.views import client_ip
from idp.db import get_db
from idp.services import clock, methods, settings, throttle

bp = Blueprint("password_reset", __name__)


class ForgotPasswordForm(Form):
    identifier = StringField(
        _l("RPPS number or email"),
        validators=[
            DataRequired(message=_l("Enter your RPPS number or your email address.")),
            Length(max=254, message=_l("This identifier is too long.")),
        ],
        render_kw={"autocomplete": "username", "autocapitalize": "none", "spellcheck": "false"},
    )


def reset_invalid(status: int = 404):
    message = _(
        "This password reset link is invalid, has expired or was already used. Ask for a new one."
    )
    back = Back(url_for("password_reset.forgot"), _("Ask for a new link"))
    return render_error(message, status, back=back, code="password_reset_invalid")


@bp.route("/login/forgot", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=False)
def forgot():
    """One answer whatever was typed: an account or not, throttled or not (see the service)."""
    form = ForgotPasswordForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("forgot_password.html", form=form), status
    when_throttled(
        lambda message: render_template("forgot_password.html", form=form, error=message)
    )
    db = get_db()
    password_reset.request_reset(
        db,
        form.identifier.data,
        ip=client_ip(),
        throttle=throttle(),
        methods=methods(),
        now=clock().now(),
        issuer=settings().issuer,
    )
    db.commit()
    return render_template("forgot_password_sent.html")


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=True)  # keeps the reset in the login state
def open_link(token: str):
    """The emailed link: keep the reset server-side and leave the token out of every later
    URL, Referer and log line; then the practitioner proves a factor (the second step)."""
    db = get_db()
    now = clock().now()
    try:
        reset = password_reset.find_reset(db, token, now=now)
    except password_reset.ResetInvalidError:
        return reset_invalid(404)
    flow.state().begin_password_reset(reset.practitioner_id, reset.id, now=now)
    audit.record(
        db, "account:password:reset_opened", practitioner_id=reset.practitioner_id, reset=reset.id
    )
    db.commit()
    return redirect(url_for("auth.second_factor"), code=303)


@bp.route("/password/new", methods=["GET", "POST"])
@policy(Policy.FIRST_FACTOR, get_changes_state=False)
def choose():
    """Choose a new password: only once a factor succeeded in this reset's login."""
    state = flow.state()
    reset = state.password_reset
    if reset is None or not reset.proven:
        message = _("Confirm that it is you with one of your sign-in methods first.")
        back = Back(url_for("password_reset.forgot"), _("Ask for a new link"))
        return render_error(message, 403, back=back, code="password_reset_unproven")
    db = get_db()
    now = clock().now()
    found = password_reset.usable_reset(
        db, reset_id=reset.reset_id, practitioner_id=reset.practitioner_id, now=now
    )
    if found is None:
        return reset_invalid(410)
    practitioner, _reset = found
    form = NewPasswordForm()
    if not passwords.accepted(form, practitioner):
        status = 400 if request.method == "POST" else 200
        return render_template("new_password.html", form=form, practitioner=practitioner), status
    try:
        password_reset.complete_reset(
            db,
            practitioner=practitioner,
            reset_id=reset.reset_id,
            password=form.password.data,
            now=now,
            sessions=current_app.session_interface.store,
        )
    except password_reset.ResetInvalidError:
        return reset_invalid(410)
    state.end_password_reset()
    return redirect(url_for("password_reset.changed"), code=303)


@bp.get("/password/changed")
@policy(Policy.PUBLIC, get_changes_state=False)
def changed():
    return render_template("password_changed.html")
