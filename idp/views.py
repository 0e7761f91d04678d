"""Site-level pages."""

from flask import Blueprint, redirect, url_for

from idp.auth.policy import Policy, policy

bp = Blueprint("site", __name__)


@bp.get("/")
@policy(Policy.PUBLIC, get_changes_state=False)
def index():
    return redirect(url_for("accounts.home"))


@bp.get("/healthz")
@policy(Policy.PUBLIC, get_changes_state=False)
def healthz():
    return {"status": "ok"}
