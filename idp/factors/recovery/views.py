"""Recovery-code pages: the code at sign-in, the limited session's landing page, a new set
shown once, and regenerating from the account page. Thin: the method and the orchestrator
decide; what a limited session may reach is declared here (``limited_ok``) and enforced once,
in ``idp.auth.policy``."""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_babel import gettext as _

from idp.auth import flow
from idp.auth.contract import LoginRestartError, MethodError
from idp.auth.errors import when_throttled
from idp.auth.forms import EmptyForm
from idp.auth.orchestrator import orchestrator
from idp.auth.policy import Policy, current_auth, policy
from idp.auth.views import (
    after_login,
    complete_login,
    first_factor_practitioner,
    limited_choice,
    restart_login_page,
    second_step_attempt,
)
from idp.db import get_db
from idp.factors.recovery import verify as codes
from idp.factors.recovery.forms import RecoveryCodeForm
from idp.services import clock, methods, settings

bp = Blueprint("recovery", __name__)
KIND = "recovery"


def method():
    return methods()[KIND]


@bp.route("/login/recovery", methods=["GET", "POST"])
@policy(Policy.FIRST_FACTOR, get_changes_state=False)
def login():
    """After the password: one recovery code opens a limited login (a new factor only)."""
    if limited_choice() is None:  # a confirmation, a step-up, an enrolment, or no code left
        return redirect(url_for("auth.second_factor"))
    practitioner = first_factor_practitioner()
    form = RecoveryCodeForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("login_recovery.html", form=form), status
    when_throttled(lambda message: render_template("login_recovery.html", form=form, error=message))
    attempt = second_step_attempt(practitioner)
    attempt.required_acr = lambda _pid: None  # a limited login reaches no application's level
    try:
        authentication = orchestrator().authenticate(
            get_db(), method(), attempt, {"code": form.code.data}
        )
    except LoginRestartError:
        return restart_login_page()
    except MethodError as exc:
        form.code.data = ""
        error = methods().message(exc.code)
        return render_template("login_recovery.html", form=form, error=error), 401
    complete_login(authentication)
    return redirect(url_for("recovery.landing"), code=303)


@bp.get("/account/recovery")
@policy(Policy.AUTHENTICATED, get_changes_state=False, limited_ok=True)
def landing():
    """Where a limited session lands for anything it may not reach: add a new sign-in
    method now; once one is added, sign out and sign in again with it (the session stays
    limited until then)."""
    auth = current_auth()
    if not auth.limited:
        return redirect(url_for("accounts.home"))
    db, now = get_db(), clock().now()
    added = [
        enrolment
        for factor in methods().factors()
        for enrolment in factor.enrolments(db, auth.practitioner_id, now=now)
        if enrolment.usable
        and enrolment.created_at is not None
        and enrolment.created_at.timestamp() >= auth.auth_time + 1  # after the code's second
    ]
    return render_template(
        "recovery_landing.html",
        added=added,
        to_add=[factor for factor in methods().factors() if factor.add_endpoint],
        remaining=method().remaining(db, auth.practitioner_id),
        form=EmptyForm(),
    )


@bp.post("/account/recovery/codes")
@policy(Policy.RECENT_STRONG, limited_ok=True)
def regenerate():
    """A new set of ten codes; the old ones stop working in the same commit."""
    if not EmptyForm().validate_on_submit():
        abort(400)
    db = get_db()
    plaintext = method().issue(
        db, current_auth().practitioner_id, now=clock().now(), reason="regenerated"
    )
    db.commit()
    flow.state().set_step(KIND, {"codes": plaintext})
    return redirect(url_for("recovery.new_codes"), code=303)


@bp.get("/account/recovery/codes/new")
@policy(Policy.AUTHENTICATED, get_changes_state=True, limited_ok=True)  # shows them once
def new_codes():
    """The set just issued, shown once: the plaintext leaves the login state here."""
    state = flow.state()
    issued = state.step(KIND).get("codes")
    state.drop_step(KIND)
    if not isinstance(issued, list) or not all(isinstance(code, str) for code in issued):
        return redirect(url_for("accounts.home"))
    heading = _("Recovery codes of %(issuer)s: each one works once.", issuer=settings().issuer_name)
    text = codes.as_text(issued, heading=heading)
    body = render_template(
        "recovery_codes.html",
        codes=[codes.display(code) for code in issued],
        download="data:text/plain;charset=utf-8," + quote(text),
        form=EmptyForm(),
    )
    return body, 200, {"Cache-Control": "no-store"}


@bp.post("/account/recovery/codes/saved")
@policy(Policy.AUTHENTICATED, limited_ok=True)
def saved():
    """ "I have saved my codes": on to the application waiting, or the account."""
    if not EmptyForm().validate_on_submit():
        abort(400)
    if current_auth().limited:
        return redirect(url_for("recovery.landing"), code=303)
    return after_login()
