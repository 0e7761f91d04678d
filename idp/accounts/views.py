"""Account pages and invitation enrolment."""

from __future__ import annotations

import datetime as dt

from flask import (
    Blueprint,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import PasswordField
from wtforms.validators import DataRequired, Length

from idp.accounts import activity, passwords, selfservice, service
from idp.auth import flow
from idp.auth.contract import Attempt
from idp.auth.errors import when_throttled
from idp.auth.forms import EmptyForm, NewPasswordForm
from idp.auth.orchestrator import orchestrator
from idp.auth.password import PASSWORD, InvalidCredentialsError
from idp.auth.policy import Policy, current_auth, policy
from idp.auth.views import after_login, current_client, current_practitioner, invitation_invalid
from idp.crypto import hash_token
from idp.db import get_db
from idp.professions import PROFESSIONS
from idp.services import clock, methods, settings

bp = Blueprint("accounts", __name__)

DONE = {
    "added": _l("The new sign-in method is ready."),
    "removed": _l("The sign-in method was removed."),
    "renamed": _l("The key was renamed."),
    "session_ended": _l("That session is signed out."),
    "app_revoked": _l("The application no longer has access to your account."),
    "password": _l("Your password is changed. Your other sessions are signed out."),
}
"""What a change says once it is made (``/account?done=<code>``: a code, never content)."""


@bp.get("/account")
@policy(Policy.AUTHENTICATED, get_changes_state=False)
def home():
    practitioner = current_practitioner()
    now = clock().now()
    enrolments = methods().enrolments(get_db(), practitioner.id, now=now)
    usable = methods().usable_count(get_db(), practitioner.id, now=now)  # recovery codes aside
    return render_template(
        "account.html",
        practitioner=practitioner,
        profession=PROFESSIONS.get(practitioner.profession_code, ""),
        enrolments=enrolments,
        last_factor=usable <= 1,
        done=DONE.get(request.args.get("done", "")),
        now=now,
        auth=current_auth(),
        last_failure=format_timestamp(current_auth().last_failure),
        form=EmptyForm(),
        sessions=my_sessions(practitioner.id),
        apps=selfservice.connected_apps(get_db(), practitioner.id),
        browser_label=activity.browser_label,
    )


def session_store():
    return current_app.session_interface.store


def current_session_hash() -> str | None:
    return hash_token(session.sid) if getattr(session, "sid", None) else None


def my_sessions(practitioner_id: int) -> list[selfservice.SessionEntry]:
    return selfservice.sessions_of(
        session_store(),
        practitioner_id,
        current_hash=current_session_hash(),
        now=clock().now(),
        idle=settings().session_idle_seconds,
        absolute=settings().session_absolute_seconds,
    )


def checked_form() -> None:
    if not EmptyForm().validate_on_submit():
        abort(400)


@bp.post("/account/sessions/sign-out")
@policy(Policy.AUTHENTICATED)
def sign_out_session():
    """ "Sign out this session", for one of the practitioner's own sessions (404 otherwise)."""
    checked_form()
    practitioner = current_practitioner()
    handle = request.form.get("session", "")
    if not selfservice.sign_out_session(get_db(), session_store(), practitioner, handle):
        abort(404)
    if handle == current_session_hash():
        flow.state().end()
        return render_template("logged_out.html")
    return redirect(url_for("accounts.home", done="session_ended") + "#sessions", code=303)


@bp.post("/account/sessions/sign-out-everywhere")
@policy(Policy.AUTHENTICATED)
def sign_out_everywhere():
    """Every session of the practitioner, this one too, and their applications' tokens."""
    checked_form()
    selfservice.sign_out_everywhere(
        get_db(), session_store(), current_practitioner(), now=clock().now()
    )
    flow.state().end()
    return render_template("signed_out_everywhere.html")


@bp.post("/account/applications/revoke")
@policy(Policy.AUTHENTICATED)
def revoke_application():
    checked_form()
    client_id = request.form.get("client_id", "")
    if not selfservice.revoke_app(get_db(), current_practitioner(), client_id, now=clock().now()):
        abort(404)
    return redirect(url_for("accounts.home", done="app_revoked") + "#applications", code=303)


@bp.get("/account/activity")
@policy(Policy.AUTHENTICATED, get_changes_state=False)
def activity_page():
    """The security history, newest first; ``?before=<id>`` for the next page."""
    before = request.args.get("before", "")
    if before and not (before.isdigit() and len(before) <= 18):
        abort(404)
    practitioner = current_practitioner()
    events, next_before = selfservice.history(
        get_db(), practitioner.id, before=int(before) if before else None
    )
    return render_template(
        "activity.html",
        events=[activity.describe(event) for event in events],
        next_before=next_before,
        form=EmptyForm(),
    )


@bp.post("/account/activity/not-me")
@policy(Policy.AUTHENTICATED)
def not_me():
    """ "This wasn't me": every session ends, every token is revoked, and the next login must
    choose a new password before anything else."""
    checked_form()
    event_id = request.form.get("event", "")
    if not (event_id.isdigit() and len(event_id) <= 18):
        abort(404)
    done = selfservice.not_me(
        get_db(), session_store(), current_practitioner(), int(event_id), now=clock().now()
    )
    if not done:
        abort(404)
    flow.state().end()
    return render_template("not_me.html")


class ChangePasswordForm(NewPasswordForm):
    current = PasswordField(
        _l("Current password"),
        validators=[
            DataRequired(message=_l("Enter your current password.")),
            Length(max=256, message=_l("This password is too long.")),
        ],
        render_kw={"autocomplete": "current-password"},
    )


def refused_password(password: str, practitioner) -> str | None:
    """Why this new password cannot replace the current one, or None."""
    refused = passwords.problem(password, practitioner)
    if refused is None and selfservice.same_as_current(practitioner, password):
        refused = _("Choose a password different from your current one.")
    return refused


@bp.route("/account/password", methods=["GET", "POST"])
@policy(Policy.RECENT_STRONG, get_changes_state=False)
def change_password():
    """The current password, then the new one; a second factor within five minutes first."""
    practitioner = current_practitioner()
    form = ChangePasswordForm()
    page = lambda status, error=None: (  # noqa: E731
        render_template("password_change.html", form=form, practitioner=practitioner, error=error),
        status,
    )
    if not form.validate_on_submit():
        return page(400 if request.method == "POST" else 200)
    when_throttled(lambda message: page(429, message)[0])
    answer = {"identifier": practitioner.rpps, "password": form.current.data}
    attempt = Attempt(client=current_client(), now=clock().now(), practitioner_id=practitioner.id)
    try:  # throttled, verified and audited like the login's password step
        orchestrator().authenticate(get_db(), PASSWORD, attempt, answer)
    except InvalidCredentialsError:
        form.current.errors = [_("This is not your current password.")]
        return page(400)
    practitioner = current_practitioner()
    refused = refused_password(form.password.data, practitioner)
    if refused:
        form.password.errors = [refused]
        return page(400)
    selfservice.change_password(
        get_db(),
        session_store(),
        practitioner,
        form.password.data,
        keep_session=current_session_hash(),
    )
    return redirect(url_for("accounts.home", done="password"), code=303)


@bp.route("/account/password/new", methods=["GET", "POST"])
@policy(Policy.AUTHENTICATED, get_changes_state=False)
def required_password():
    """After "This wasn't me", the first page of the next login: a new password before
    anything else (``idp.auth.policy`` sends every other signed-in page here)."""
    practitioner = current_practitioner()
    if not practitioner.password_change_required:
        return redirect(url_for("accounts.home"))
    form = NewPasswordForm()
    if not passwords.accepted(form, practitioner, problem_of=refused_password):
        status = 400 if request.method == "POST" else 200
        body = render_template("password_required.html", form=form, practitioner=practitioner)
        return body, status
    selfservice.change_password(
        get_db(),
        session_store(),
        practitioner,
        form.password.data,
        keep_session=current_session_hash(),
        required=True,
    )
    return after_login()


def format_timestamp(value: float | None) -> str:
    """In the practitioner's language and the deployment's time zone."""
    if value is None:
        return ""
    return format_datetime(dt.datetime.fromtimestamp(value, dt.UTC), "d MMMM y, HH:mm")


@bp.route("/enrol/<token>", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=True)  # keeps the invitation in the session
def open_invitation(token: str):
    """The emailed link: keep the invitation server-side, and leave the token out of every
    later URL, Referer and access log line (the enrolment page is ``/enrol``)."""
    try:
        invitation = service.find_invitation(get_db(), token=token, clock=clock())
    except service.InvitationInvalidError:
        return invitation_invalid(404)
    flow.state().open_invitation(invitation)
    return redirect(url_for("accounts.enrol"), code=303)


@bp.route("/enrol", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=False)
def enrol():
    """Invitation, step 1: choose a password; the next step binds a second factor."""
    db = get_db()
    opened = flow.state().opened_invitation
    found = opened and flow.usable_invitation(
        db,
        invitation_id=opened.invitation_id,
        practitioner_id=opened.practitioner_id,
        now=clock().now(),
    )
    if not found:
        return invitation_invalid(404)
    practitioner, invitation = found
    form = NewPasswordForm()
    if not passwords.accepted(form, practitioner):
        status = 400 if request.method == "POST" else 200
        return render_template("enrol.html", form=form, practitioner=practitioner), status
    service.set_password(db, practitioner=practitioner, password=form.password.data)
    method = methods().invitation_method()
    now = clock().now()
    attempt = Attempt(client=None, now=now, practitioner_id=practitioner.id)
    started = method.begin_enrol(db, attempt)
    db.commit()
    state = flow.state()
    state.begin_enrolment(invitation, now=now)
    state.set_step(method.kind, started)
    return redirect(url_for(method.invitation_endpoint), code=303)
