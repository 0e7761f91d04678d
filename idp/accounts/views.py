"""Account pages and invitation enrolment."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, redirect, render_template, request, url_for
from flask_babel import format_datetime
from flask_babel import lazy_gettext as _l

from idp.accounts import passwords, service
from idp.auth import flow
from idp.auth.contract import Attempt
from idp.auth.forms import EmptyForm, NewPasswordForm
from idp.auth.policy import Policy, current_auth, policy
from idp.auth.views import current_practitioner, invitation_invalid
from idp.db import get_db
from idp.professions import PROFESSIONS
from idp.services import clock, methods

bp = Blueprint("accounts", __name__)

DONE = {
    "added": _l("The new sign-in method is ready."),
    "removed": _l("The sign-in method was removed."),
    "renamed": _l("The key was renamed."),
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
    )


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
    valid = form.validate_on_submit()
    refused = valid and passwords.problem(form.password.data, practitioner)
    if refused:
        form.password.errors = [refused]
    if not valid or refused:
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
