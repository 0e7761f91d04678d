"""Site-level pages."""

from flask import Blueprint, abort, redirect, request, url_for

from idp import i18n
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


@bp.get("/language/<code>")
@policy(Policy.PUBLIC, get_changes_state=False)  # the choice is a browser cookie, not state
def language(code: str):
    """Switch the page language and come back to exactly the page the person was on: the
    pending authorization request and the login in progress stay in the session."""
    if code not in i18n.LANGUAGES:
        abort(404)
    target = i18n.same_site_path(request.args.get("next"))
    target = i18n.with_language(target, code) if target else url_for("site.index")
    response = redirect(target, code=303)
    i18n.remember_language(response, code)
    return response
