"""The token endpoint: an authorization code exchanged for tokens (RFC 6749 §4.1.3 and §5, PKCE
RFC 7636 §4.6, OpenID Connect Core §3.1.3).

It is the hottest write of the service, so it is written out here rather than run through
Authlib's grant machinery (which still serves ``/authorize``): the checks, their order and the
errors are Authlib's; the work is one prebuilt statement on PostgreSQL, four and one commit on
SQLite (``redeem``).

1. ``grant_type`` (only ``authorization_code``; a missing one is ``invalid_request``);
2. the client (``client_secret_basic``, ``client_secret_post`` or ``none``, as registered);
3. the code, claimed at once: a failed exchange still spends it, a spent one presented again
   revokes what it bought;
4. ``redirect_uri``, then PKCE S256, then the practitioner (still active, no forced password
   change, not a recovery-code login);
5. the access token and its audit row, then the ID token, signed with the key of the client's
   algorithm."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from urllib.parse import unquote

from flask import Response, current_app, request
from joserfc import jwt
from sqlalchemy import Text, and_, bindparam, cast, false, func, insert, select, update

from idp import audit
from idp.auth import assurance
from idp.crypto import hash_token, new_token
from idp.db import autocommit_one, commit_if_open, get_db
from idp.models import (
    AuditEvent,
    AuthorizationCode,
    OAuthClient,
    Practitioner,
    PractitionerStatus,
    Token,
)
from idp.oauth.claims import user_claims
from idp.oauth.server import query_client
from idp.services import clock, keyring, settings

VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
SINGLE = ("grant_type", "code", "redirect_uri", "code_verifier", "client_id", "client_secret")
"""Parameters that must not be repeated (RFC 6749 §3.2)."""

_CODES = AuthorizationCode.__table__
_PEOPLE = Practitioner.__table__
_TOKENS = Token.__table__
_EVENTS = AuditEvent.__table__
HOLDER = ("subject", "given_name", "family_name", "email", "rpps", "profession_code")
"""What the ID token says of the practitioner (``idp.oauth.claims.user_claims``)."""
TOKEN_COLUMNS = (
    "access_token_hash", "client_id", "practitioner_id", "authorization_code_id", "scope",
    "acr", "amr", "auth_time", "issued_at", "expires_at",
)  # fmt: skip
AUDIT_COLUMNS = ("at", "event", "practitioner_id", "client_id", "ip", "user_agent", "details_json")


def _param(name: str, column):
    return bindparam(name, type_=column.type)


def _claim(*returning):
    return (
        update(_CODES)
        .where(
            _CODES.c.code_hash == bindparam("hash"),
            _CODES.c.client_id == _param("client", _CODES.c.client_id),
            _CODES.c.used_at.is_(None),
        )
        .values(used_at=_param("now", _CODES.c.used_at))
        .returning(*returning)
    )


def _verdicts(code) -> tuple:
    """Whether a token may be issued for the claimed ``code``, one condition per error."""
    return (
        (code.c.issued_at >= _param("oldest", _CODES.c.issued_at)).label("fresh"),
        (code.c.redirect_uri == _param("presented_uri", _CODES.c.redirect_uri)).label(
            "same_redirect"
        ),
        (code.c.code_challenge == _param("challenge", _CODES.c.code_challenge)).label("verified"),
        and_(
            _PEOPLE.c.status == _param("active", _PEOPLE.c.status),
            _PEOPLE.c.password_change_required.is_(false()),  # "This wasn't me" since
            code.c.acr != _param("recovery", _CODES.c.acr),  # a limited login: never a token
        ).label("holder_ok"),
    )


def _checked(code):
    """The claimed code, its practitioner, and the verdicts as columns: the first false one
    names the error; ``ok`` is all of them."""
    return select(
        code.c.id,
        code.c.practitioner_id,
        code.c.scope,
        code.c.nonce,
        code.c.acr,
        code.c.amr,
        code.c.auth_time,
        *(_PEOPLE.c[name] for name in HOLDER),
        *_verdicts(code),
        and_(*(verdict.element for verdict in _verdicts(code))).label("ok"),
    ).join_from(code, _PEOPLE, _PEOPLE.c.id == code.c.practitioner_id)


def _token_row(checked):
    """The token's INSERT … SELECT from the checked code (only when ``ok``)."""
    return select(
        _param("token_hash", _TOKENS.c.access_token_hash),
        _param("client", _TOKENS.c.client_id),
        checked.c.practitioner_id,
        checked.c.id,
        checked.c.scope,
        checked.c.acr,
        checked.c.amr,
        checked.c.auth_time,
        _param("now", _TOKENS.c.issued_at),
        _param("expires", _TOKENS.c.expires_at),
    ).where(checked.c.ok)


def _one_statement():
    """PostgreSQL: the claim, the checks, the token and its audit row in one statement (one
    round trip, its own transaction): a replay waits on the claimed row and finds the token."""
    claimed = _claim(*_CODES.c).cte("claimed")
    checked = _checked(claimed).cte("checked")
    issued = (
        insert(_TOKENS)
        .from_select(TOKEN_COLUMNS, _token_row(checked))
        .returning(_TOKENS.c.practitioner_id, _TOKENS.c.scope)
        .cte("issued")
    )
    details = func.concat('{"scope": ', cast(func.to_json(issued.c.scope), Text), "}")
    logged = (
        insert(_EVENTS)
        .from_select(
            AUDIT_COLUMNS,
            select(
                _param("at", _EVENTS.c.at),
                _param("event", _EVENTS.c.event),
                issued.c.practitioner_id,
                _param("client", _EVENTS.c.client_id),
                _param("ip", _EVENTS.c.ip),
                _param("user_agent", _EVENTS.c.user_agent),
                details,
            ),
        )
        .returning(_EVENTS.c.id)
        .cte("logged")
    )
    # Referenced, so that the INSERTs are part of the statement (a WITH runs them all).
    landed = select(func.count()).select_from(logged).scalar_subquery()
    return select(checked, landed.label("issued"))


REDEEM = _one_statement()
CLAIM_CODE = _claim(_CODES.c.id)
CHECK_CODE = _checked(_CODES).where(_CODES.c.id == bindparam("code_id"))
INSERT_TOKEN = insert(_TOKENS)
INSERT_AUDIT = insert(_EVENTS)
SPENT_CODE = select(_CODES.c.id, _CODES.c.practitioner_id).where(
    _CODES.c.code_hash == bindparam("hash"), _CODES.c.client_id == bindparam("client")
)
REVOKE_BOUGHT = (
    update(_TOKENS)
    .where(_TOKENS.c.authorization_code_id == bindparam("code_id"), _TOKENS.c.revoked_at.is_(None))
    .values(revoked_at=bindparam("now"))
)

NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


class TokenError(Exception):
    """An error response of the token endpoint (RFC 6749 §5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(error)
        self.error, self.description, self.status = error, description, status

    def response(self) -> Response:
        body = {"error": self.error, "error_description": self.description}
        response = Response(json.dumps(body), self.status, NO_STORE, "application/json")
        if self.status == 401:
            response.headers["WWW-Authenticate"] = (
                f'Basic error="{self.error}", error_description="{self.description}"'
            )
        return response


def invalid_grant(description: str) -> TokenError:
    return TokenError("invalid_grant", description)


def token_response() -> Response:
    """The endpoint's whole answer; one commit, whatever happened to the code."""
    try:
        body = exchange()
    except TokenError as error:
        commit_if_open()  # the claim of a failed exchange, or the revocation of a replay
        return error.response()
    commit_if_open()
    return Response(json.dumps(body), 200, NO_STORE, "application/json")


def exchange() -> dict:
    form = request.form
    for name in SINGLE:
        if len(form.getlist(name)) > 1:
            raise TokenError("invalid_request", f"Repeated parameter '{name}'.")
    grant_type = form.get("grant_type")
    if not grant_type:
        raise TokenError("invalid_request", "Missing 'grant_type' in request.")
    if grant_type != "authorization_code":
        raise TokenError("unsupported_grant_type", "Only 'authorization_code' is supported.")
    client = authenticate_client(form)
    code = form.get("code")
    if code is None:
        raise TokenError("invalid_request", "Missing 'code' in request.")
    verifier = form.get("code_verifier")
    access_token = new_token(32)
    expires_in = settings().access_token_ttl_seconds
    now = clock().now()
    params = {
        "hash": hash_token(code),
        "client": client.client_id,
        "now": now,
        "oldest": now - dt.timedelta(seconds=settings().code_ttl_seconds),
        "presented_uri": form.get("redirect_uri"),
        "challenge": s256(verifier) if verifier and VERIFIER.fullmatch(verifier) else None,
        "token_hash": hash_token(access_token),
        "expires": now + dt.timedelta(seconds=expires_in),
        "active": PractitionerStatus.ACTIVE,
        "recovery": assurance.RECOVERY,
    }
    found = redeem(params)
    if found is None or not found.fresh:
        raise invalid_grant("Invalid 'code' in request.")
    if not found.same_redirect:
        raise invalid_grant("Invalid 'redirect_uri' in request.")
    if not verifier:
        raise TokenError("invalid_request", "Missing 'code_verifier'.")
    if params["challenge"] is None:
        raise TokenError("invalid_request", "Invalid 'code_verifier'.")
    if not found.verified:
        raise invalid_grant("Code challenge failed.")
    if not found.holder_ok:
        raise invalid_grant("There is no 'user' for this code.")
    body = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "scope": found.scope,
    }
    if "openid" in found.scope.split():
        body["id_token"] = id_token(client, found, access_token, now)
    return body


def redeem(params: dict):
    """Claim the code and, when every check passes, issue its token: the checked code back
    (``idp.oauth.exchange._checked``), None for a code unknown or already spent.

    The claim and the token land together, so a replay can never slip in between them and
    find nothing to revoke; a failed exchange (wrong verifier, expired code) spends the code
    all the same: one try. On PostgreSQL that is one statement in its own transaction; on
    SQLite (no writes in a WITH) four, in the request's transaction, which the endpoint
    commits (a replay waits on SQLite's write lock, then finds the token)."""
    token_audit = audit.values("oauth:token:issued", client_id=params["client"])
    if current_app.extensions["idp.engine"].dialect.name == "postgresql":
        request_values = {key: token_audit[key] for key in ("at", "event", "ip", "user_agent")}
        found = autocommit_one(REDEEM, {**params, **request_values})
    else:
        db = get_db()
        code_id = db.execute(
            CLAIM_CODE, {key: params[key] for key in ("hash", "client", "now")}
        ).scalar()
        found = None
        if code_id is not None:
            found = db.execute(CHECK_CODE, {**params, "code_id": code_id}).one_or_none()
            if found is not None and found.ok:
                issue(db, params, found, token_audit)
    if found is None:
        revoke_bought(get_db(), params)
    return found


def issue(db, params: dict, found, token_audit: dict) -> None:
    """SQLite: the token and its audit row, the checks passed (``REDEEM`` does the same)."""
    db.execute(
        INSERT_TOKEN,
        {
            "access_token_hash": params["token_hash"],
            "client_id": params["client"],
            "practitioner_id": found.practitioner_id,
            "authorization_code_id": found.id,
            "scope": found.scope,
            "acr": found.acr,
            "amr": found.amr,
            "auth_time": found.auth_time,
            "issued_at": params["now"],
            "expires_at": params["expires"],
        },
    )
    details = json.dumps({"scope": found.scope})
    db.execute(
        INSERT_AUDIT,
        {**token_audit, "practitioner_id": found.practitioner_id, "details_json": details},
    )


def revoke_bought(db, params: dict) -> None:
    """A spent code presented again: what it bought is revoked (RFC 6749 §4.1.2)."""
    spent = db.execute(SPENT_CODE, {"hash": params["hash"], "client": params["client"]}).first()
    if spent is None:
        return
    revoked = db.execute(REVOKE_BOUGHT, {"code_id": spent.id, "now": params["now"]}).rowcount
    audit.record(
        db,
        "oauth:code:reused",
        practitioner_id=spent.practitioner_id,
        client_id=params["client"],
        revoked_tokens=revoked,
    )


def authenticate_client(form) -> OAuthClient:
    """RFC 6749 §2.3.1, in Authlib's order: HTTP Basic, then the form's secret, then a public
    client's bare ``client_id``; the method used must be the one registered."""
    basic_id, basic_secret = basic_credentials(request.headers.get("Authorization"))
    if basic_id and basic_secret:
        client = query_client(basic_id)
        if client is None:
            raise TokenError("invalid_client", "The client does not exist on this server.", 401)
        if client.check_client_secret(basic_secret):
            return checked_method(client, "client_secret_basic")
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if client_id and secret:
        client = query_client(client_id)
        if client is None:
            raise TokenError("invalid_client", "The client does not exist on this server.")
        if client.check_client_secret(secret):
            return checked_method(client, "client_secret_post")
    elif client_id:
        client = query_client(client_id)
        if client is None:
            raise TokenError("invalid_client", "The client does not exist on this server.")
        if client.check_endpoint_auth_method("none", "token"):
            return client
    raise TokenError("invalid_client", "Client authentication failed.", 401)


def checked_method(client: OAuthClient, method: str) -> OAuthClient:
    if not client.check_endpoint_auth_method(method, "token"):
        raise TokenError("invalid_client", "Client authentication failed.", 401)
    return client


def basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    """``Authorization: Basic`` as RFC 6749 §2.3.1 has it: both parts form-urlencoded."""
    scheme, _space, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    username, colon, password = decoded.partition(":")
    if not colon:
        return None, None
    return unquote(username), unquote(password)


def s256(verifier: str) -> str:
    """PKCE's S256 (RFC 7636 §4.2): what the code's challenge must be."""
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def id_token(client: OAuthClient, found, access_token: str, now) -> str:
    alg = client.id_token_signed_response_alg or "RS256"
    kid, key = keyring().signing_key(get_db, alg)
    issued = int(now.timestamp())
    claims = {
        "iss": settings().issuer,
        "aud": client.client_id,
        "iat": issued,
        "exp": issued + settings().id_token_ttl_seconds,
        "auth_time": int(found.auth_time.timestamp()),
        "acr": found.acr,
        "at_hash": half_hash(access_token, alg),
    }
    if found.amr:
        claims["amr"] = found.amr.split()
    if found.nonce:
        claims["nonce"] = found.nonce
    claims.update(user_claims(found, found.scope))  # the row has the practitioner's names
    return jwt.encode({"alg": alg, "kid": kid, "typ": "JWT"}, claims, key, [alg])


def half_hash(value: str, alg: str) -> str:
    """``at_hash`` (OIDC Core §3.1.3.6): the left half of the hash named by ``alg``'s size."""
    digest = getattr(hashlib, f"sha{alg[2:]}")(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()
