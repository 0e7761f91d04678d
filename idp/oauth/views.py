"""OpenID Connect endpoints: discovery, JWKS, authorization, token, UserInfo."""

from __future__ import annotations

import hashlib
import io
import json
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AccessDeniedError, InvalidRequestError
from authlib.oidc.core.errors import ConsentRequiredError, LoginRequiredError
from flask import (
    Blueprint,
    Request,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError, validate_csrf
from sqlalchemy import bindparam, select
from wtforms import ValidationError

from idp import audit
from idp.auth import assurance, flow
from idp.auth.error_pages import Back, render_error
from idp.auth.policy import FORCED_CHANGE_PAGE, Policy, current_auth, policy
from idp.auth.views import KEPT_REQUEST_ANSWER
from idp.crypto import hash_token
from idp.db import autocommit_one, get_db
from idp.models import Consent, OAuthClient, Practitioner, PractitionerStatus, Token
from idp.oauth import exchange, keys
from idp.oauth.claims import CLAIMS_SUPPORTED, SCOPES_SUPPORTED, user_claims
from idp.oauth.messages import page_case
from idp.oauth.server import AuthorizationCodeGrant, query_client
from idp.oauth.validation import (
    RESPONSE_MODES,
    UnmetAuthenticationRequirementsError,
    is_printable_ascii,
    requested_acr,
)
from idp.services import clock, keyring, settings

bp = Blueprint("oauth", __name__)

FORM_ONLY_FIELDS = {"csrf_token", "consent_decision"}


def server():
    return current_app.extensions["idp.oauth_server"]


def endpoint(path: str) -> str:
    return settings().issuer + path


DOCUMENT_MAX_AGE = 300
"""Seconds a client may keep discovery and the JWKS without asking (a rotation shows within
this long; retired keys stay published far longer)."""


def discovery_document() -> dict:
    return dict(
        issuer=settings().issuer,
        authorization_endpoint=endpoint("/authorize"),
        token_endpoint=endpoint("/token"),
        userinfo_endpoint=endpoint("/userinfo"),
        jwks_uri=endpoint("/jwks.json"),
        scopes_supported=list(SCOPES_SUPPORTED),
        response_types_supported=["code"],
        response_modes_supported=list(RESPONSE_MODES),
        grant_types_supported=["authorization_code"],
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=sorted(keys.ALGORITHMS),
        token_endpoint_auth_methods_supported=AuthorizationCodeGrant.TOKEN_ENDPOINT_AUTH_METHODS,
        code_challenge_methods_supported=["S256"],
        claims_supported=list(CLAIMS_SUPPORTED),
        acr_values_supported=list(assurance.SUPPORTED),
        prompt_values_supported=["none", "login", "consent"],
        ui_locales_supported=["fr", "en"],
        claims_parameter_supported=False,
        request_parameter_supported=False,
        request_uri_parameter_supported=False,
        authorization_response_iss_parameter_supported=True,
    )


def published_json(document: keys.Published) -> Response:
    """A document served from memory: its ETag, a 304 when the client has it already."""
    headers = {
        "ETag": f'"{document.etag}"',
        "Cache-Control": f"public, max-age={DOCUMENT_MAX_AGE}",
        "Vary": "Accept-Encoding",
    }
    if request.if_none_match.contains(document.etag):
        return Response(status=304, headers=headers)
    return Response(document.body, mimetype="application/json", headers=headers)


@bp.get("/.well-known/openid-configuration")
@policy(Policy.PUBLIC, get_changes_state=False)
def discovery():
    """Built once per process (per issuer: the configuration names it)."""
    cache = current_app.extensions.setdefault("idp.discovery", {})
    issuer = settings().issuer
    if issuer not in cache:
        cache.clear()
        cache[issuer] = keys.published(discovery_document())
    return published_json(cache[issuer])


@bp.get("/jwks.json")
@policy(Policy.PUBLIC, get_changes_state=True)  # the first fetch creates the signing keys
def jwks():
    return published_json(keyring().jwks(get_db))


def with_issuer(response: Response) -> Response:
    """RFC 9207: every response delivered to the redirect URI carries ``iss``."""
    location = response.headers.get("Location")
    if response.status_code in (301, 302, 303) and location:
        parts = urlsplit(location)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "iss"]
        query.append(("iss", settings().issuer))
        response.headers["Location"] = urlunsplit(parts._replace(query=urlencode(query)))
    return response


def application_back() -> Back | None:
    """The way back to the application named by this request: only when its ``redirect_uri``
    is registered for that client, and only to that address's origin (http or https)."""
    client = query_client(request.values.get("client_id") or "")
    redirect_uri = request.values.get("redirect_uri") or ""
    if client is None or not is_printable_ascii(redirect_uri):
        return None
    if not client.check_redirect_uri(redirect_uri):
        return None
    parts = urlsplit(redirect_uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    origin = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
    return Back(origin, _("Back to %(name)s", name=client.name))


def error_page(message: str, status: int = 400, *, code: str = "error"):
    return render_error(message, status, back=application_back(), code=code)


def form_expired_page():
    return error_page(
        _("The form expired or was sent from elsewhere. Reload the page and try again."),
        code="csrf",
    )


def oauth_error_response(error: OAuth2Error):
    """Redirect to the client only when its redirect URI was validated; else show a page,
    in the practitioner's language (the English description is for the client only)."""
    if getattr(error, "redirect_uri", None):
        return with_issuer(server().handle_error_response(None, error))
    code, message = page_case(error)
    return error_page(message, code=code)


def request_params() -> list[tuple[str, str]]:
    source = request.form if request.method == "POST" else request.args
    return [(k, v) for k, v in source.items(multi=True) if k not in FORM_ONLY_FIELDS]


def fingerprint(params) -> str:
    return hashlib.sha256(json.dumps(sorted(map(list, params))).encode()).hexdigest()


def fresh_login_for(params: list[tuple[str, str]], auth: dict | None) -> bool:
    """True when the current login happened for this very request (prompt=login, max_age)."""
    pending = flow.state().pending_request
    return bool(
        auth and pending and pending.fp == fingerprint(params) and auth.auth_time >= pending.at
    )


def login_reason(grant, auth: dict | None, params) -> str | None:
    data = grant.request.payload.data
    if auth is None:
        return "login"
    if not fresh_login_for(params, auth):
        if "login" in (data.get("prompt") or "").split():
            return "login"
        max_age = data.get("max_age")
        if max_age is not None:
            if not str(max_age).isdigit():
                raise InvalidRequestError("Invalid 'max_age'.", redirect_uri=grant.redirect_uri)
            if clock().now().timestamp() - auth.auth_time > int(max_age):
                return "login"
    if not assurance.satisfies(auth.acr, requested_acr(data)):
        return "step-up"
    return None


def find_consent(db, client: OAuthClient, practitioner: Practitioner) -> Consent | None:
    return db.execute(
        select(Consent).where(
            Consent.practitioner_id == practitioner.id, Consent.client_id == client.client_id
        )
    ).scalar_one_or_none()


def needs_consent(db, client: OAuthClient, practitioner: Practitioner, grant) -> bool:
    if "consent" in (grant.request.payload.data.get("prompt") or "").split():
        return True
    if not client.require_consent:
        return False
    consent = find_consent(db, client, practitioner)
    requested = set(grant.request.payload.scope.split())
    return consent is None or not requested <= set(consent.scope.split())


def record_consent(db, client: OAuthClient, practitioner: Practitioner, scope: str) -> None:
    consent = find_consent(db, client, practitioner)
    if consent is None:
        consent = Consent(practitioner_id=practitioner.id, client_id=client.client_id, scope="")
        db.add(consent)
    consent.scope = " ".join(sorted(set(consent.scope.split()) | set(scope.split())))
    consent.granted_at = clock().now()
    audit.record(
        db,
        "oauth:consent:granted",
        practitioner_id=practitioner.id,
        client_id=client.client_id,
        scope=scope,
    )
    db.commit()


def stash_and_login(grant, params, *, confirm: bool = False, to: str | None = None) -> Response:
    """Keep the request while the practitioner signs in, or, already signed in at a lower
    level than asked (``confirm``), confirms with a stronger factor of theirs."""
    data = grant.request.payload.data
    flow.state().keep_request(
        flow.PendingRequest(
            params=[list(p) for p in params],
            fp=fingerprint(params),
            at=clock().now().timestamp(),
            acr=assurance.required_level(requested_acr(data)),
            login_hint=(data.get("login_hint") or "")[:254],
            redirect_uri=grant.redirect_uri,
            state=data.get("state"),
            client_name=grant.client.name,
        )
    )
    return redirect(to or url_for("auth.reauthenticate" if confirm else "auth.login"))


def signed_in():
    """The browser's completed login and its practitioner, or (None, None): a recovery-code
    login only binds a new factor (for an application, no login), and the login of an account
    no longer active ends here."""
    auth = current_auth()
    if auth is None or auth.limited:
        return None, None
    practitioner = get_db().get(Practitioner, auth.practitioner_id)
    if practitioner is None or practitioner.status != PractitionerStatus.ACTIVE:
        flow.state().end()
        return None, None
    return auth, practitioner


@bp.route("/authorize", methods=["GET", "POST"])
@policy(Policy.PUBLIC, get_changes_state=True)  # keeps the pending request for the login
def authorize():
    db = get_db()
    params = request_params()
    auth, practitioner = signed_in()
    try:
        grant = server().get_consent_grant(end_user=practitioner)
        prompts = (grant.request.payload.data.get("prompt") or "").split()
        reason = login_reason(grant, auth, params)
        if reason is not None:
            if "none" in prompts:
                raise LoginRequiredError(redirect_uri=grant.redirect_uri)
            return stash_and_login(grant, params, confirm=reason == "step-up")
        if practitioner.password_change_required:
            # "This wasn't me": nothing is issued until a new password is chosen; the request
            # waits, and continues once it is.
            if "none" in prompts:
                raise LoginRequiredError(redirect_uri=grant.redirect_uri)
            return stash_and_login(grant, params, to=url_for(FORCED_CHANGE_PAGE))
        if needs_consent(db, grant.client, practitioner, grant):
            decision = request.form.get("consent_decision") if request.method == "POST" else None
            if decision is None:
                if "none" in prompts:
                    raise ConsentRequiredError(redirect_uri=grant.redirect_uri)
                return render_consent(grant, params)
            validate_csrf(request.form.get("csrf_token"))
            if decision != "approve":
                flow.state().drop_request()
                raise AccessDeniedError(redirect_uri=grant.redirect_uri)
            record_consent(db, grant.client, practitioner, grant.request.payload.scope)
    except (CSRFError, ValidationError):
        return form_expired_page()
    except OAuth2Error as error:
        error.state = request.values.get("state")
        return oauth_error_response(error)
    return issue(grant, practitioner)


def issue(grant, practitioner: Practitioner) -> Response:
    """The code (or Authlib's error) for a validated request, back to the application."""
    response = server().respond(grant, practitioner)
    flow.state().drop_request()
    return with_issuer(response)


def kept_request(params: list[tuple[str, str]]) -> Request:
    """The kept authorization request, as the browser would bring it back to /authorize."""
    return Request(
        {
            **request.environ,
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/authorize",
            "QUERY_STRING": urlencode(params),
            "CONTENT_TYPE": "",
            "CONTENT_LENGTH": "0",
            "wsgi.input": io.BytesIO(),
        }
    )


def answer_kept_request() -> Response | None:
    """At the end of a login for an application: the code, sent from the login's last step
    straight to the application, when /authorize would now issue it without asking anything
    (no further login or step-up, no consent, no new password first): one redirect fewer.
    Otherwise None, and the browser goes back to /authorize, which deals with the rest as it
    always does. The same checks as /authorize, on the request it kept."""
    pending = flow.state().pending_request
    auth, practitioner = signed_in()
    if pending is None or practitioner is None or practitioner.password_change_required:
        return None
    params = [tuple(p) for p in pending.params]
    try:
        grant = server().get_consent_grant(kept_request(params), end_user=practitioner)
        if login_reason(grant, auth, params) is not None:
            return None
        if needs_consent(get_db(), grant.client, practitioner, grant):
            return None
    except OAuth2Error:
        return None
    response = issue(grant, practitioner)
    if response.status_code == 302:
        response.status_code = 303  # RFC 9700 §4.12: the request carried credentials
    return response


@bp.record_once
def register_kept_request_answer(setup_state) -> None:
    setup_state.app.extensions[KEPT_REQUEST_ANSWER] = answer_kept_request


def render_consent(grant, params):
    return render_template(
        "consent.html",
        client=grant.client,
        scopes=grant.request.payload.scope.split(),
        params=params,
    )


@bp.post("/authorize/cancel")
@policy(Policy.PUBLIC)
def cancel():
    """The practitioner gave up (or no factor meets the level asked): tell the client. The
    step in progress goes; a session the practitioner already had stays as it was.

    A POST with the form's CSRF token: a link from another site must not end a sign-in."""
    try:
        validate_csrf(request.form.get("csrf_token"))
    except (CSRFError, ValidationError):
        return form_expired_page()
    flow.state().abandon()
    pending = flow.state().drop_request()
    if pending is None:
        return redirect(url_for("auth.login"), code=303)
    error_cls = (
        UnmetAuthenticationRequirementsError
        if request.form.get("reason") == "unmet"
        else AccessDeniedError
    )
    error = error_cls(redirect_uri=pending.redirect_uri, state=pending.state)
    return oauth_error_response(error)


@bp.post("/token")
@policy(Policy.CLIENT)
def token():
    return exchange.token_response()


def bearer_error(error: str, description: str, status: int = 401):
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers["WWW-Authenticate"] = f'Bearer error="{error}"'
    response.headers["Cache-Control"] = "no-store"
    return response


_TOKENS = Token.__table__
USERINFO = (
    select(_TOKENS.c.revoked_at, _TOKENS.c.expires_at, _TOKENS.c.scope, *Practitioner.__table__.c)
    .join(Practitioner.__table__, Practitioner.__table__.c.id == _TOKENS.c.practitioner_id)
    .where(_TOKENS.c.access_token_hash == bindparam("hash"))
)
"""Built once: the token and its practitioner in one read."""


@bp.route("/userinfo", methods=["GET", "POST"])
@policy(Policy.BEARER, get_changes_state=False)
def userinfo():
    if "access_token" in request.values:
        return bearer_error("invalid_request", "Send the access token in the Authorization header.")
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        response = bearer_error("invalid_token", "Missing bearer token.")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response
    found = autocommit_one(USERINFO, {"hash": hash_token(value.strip())})
    if found is None or found.revoked_at is not None or found.expires_at <= clock().now():
        return bearer_error("invalid_token", "The access token is invalid, expired or revoked.")
    if "openid" not in found.scope.split():
        return bearer_error("insufficient_scope", "The openid scope is required.", 403)
    if found.status != PractitionerStatus.ACTIVE:
        return bearer_error("invalid_token", "The account is no longer active.")
    response = jsonify(user_claims(found, found.scope))  # the row has the practitioner's names
    response.headers["Cache-Control"] = "no-store"
    return response
