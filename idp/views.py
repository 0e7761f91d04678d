"""Site-level pages."""

from flask import Blueprint, redirect, url_for

from idp.policy import Policy, policy

bp = Blueprint("site", __name__)


@bp.get("/")
@policy(Policy.PUBLIC)
def index():
    return redirect(url_for("accounts.home"))


@bp.get("/healthz")
@policy(Policy.PUBLIC)
def healthz():
    return {"status": "ok"}
