"""The authorization request, checked in the order the standards imply, before Authlib's own
checks: who the client is and where the answer may go (an error page until both are known,
never a redirect), then what this provider does not implement, then what is missing.

Authlib echoes some request values into its error descriptions, and a description outside
RFC 6749's restricted ASCII makes it raise ``ValueError`` (HTTP 500): the values it would echo
are checked here first, and the descriptions below never contain request input.
"""

from __future__ import annotations

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    UnsupportedResponseTypeError,
)
from authlib.oidc.core.errors import (
    RegistrationNotSupportedError,
    RequestNotSupportedError,
    RequestURINotSupportedError,
)
from flask import request as flask_request

from idp import jsonlimits
from idp.auth import assurance

RESPONSE_TYPES = ("code",)
RESPONSE_MODES = ("query",)
"""What discovery advertises: the code comes back in the query, and nothing else is done."""
MAX_CLAIMS_BYTES = 8 * 1024

MISSING_CLIENT_ID = "Missing 'client_id' parameter."  # Authlib's words, kept
UNKNOWN_CLIENT = "The client does not exist on this server."
MISSING_REDIRECT_URI = "Missing 'redirect_uri' parameter."
INVALID_REDIRECT_URI = "Invalid 'redirect_uri': characters outside printable ASCII."
UNREGISTERED_REDIRECT_URI = "The 'redirect_uri' is not registered for this client."
UNSUPPORTED_RESPONSE_MODE = "Unsupported 'response_mode': only 'query' is supported."
OPENID_SCOPE_REQUIRED = "The 'openid' scope is required: this is an OpenID Connect provider."
INVALID_CLAIMS = "Invalid 'claims' parameter: a JSON object is expected."
UNMET_ACR = "None of the essential 'acr' values can be met."


class UnmetAuthenticationRequirementsError(OAuth2Error):
    """OpenID Connect Core errata / EAP: the requested acr cannot be reached."""

    error = "unmet_authentication_requirements"


def is_printable_ascii(value: str) -> bool:
    """Printable ASCII only (RFC 3986): no control character, space or raw non-ASCII."""
    return all(0x21 <= ord(char) <= 0x7E for char in value)


def check_redirect_uri(uri: str | None, client) -> str:
    """The redirect URI the answer may go to; raises (no redirect: an error page) otherwise.

    OpenID Connect Core §3.1.2.1: ``redirect_uri`` is required, even when the client has a
    single registered URI (OAuth 2.0 would fall back to it), and must match one exactly.
    """
    if not uri:
        raise InvalidRequestError(MISSING_REDIRECT_URI)
    if not is_printable_ascii(uri):
        raise InvalidRequestError(INVALID_REDIRECT_URI)
    if not client.check_redirect_uri(uri):
        raise InvalidRequestError(UNREGISTERED_REDIRECT_URI)
    return uri


def refuse_what_is_not_supported(grant, redirect_uri: str) -> None:
    """Once the redirect URI is known good, before any check of what is missing (Authlib's
    PKCE and OpenID hooks run after): OIDC Core §3.1.2.6 answers a request object with
    ``request_not_supported``, not with the first parameter it happens to lack. Errors
    raised here are redirected to ``redirect_uri`` (Authlib adds it)."""
    data = grant.request.payload.data
    if "request" in data:
        raise RequestNotSupportedError()
    if "request_uri" in data:
        raise RequestURINotSupportedError()
    if "registration" in data:
        raise RegistrationNotSupportedError()
    if data.get("response_mode") not in (None, *RESPONSE_MODES):
        raise InvalidRequestError(UNSUPPORTED_RESPONSE_MODE)
    if "openid" not in (grant.request.payload.scope or "").split():
        raise InvalidScopeError(OPENID_SCOPE_REQUIRED)
    parsed_claims(data)  # malformed: invalid_request
    if essential_acr(data) == []:
        raise UnmetAuthenticationRequirementsError(UNMET_ACR)


def parsed_claims(data) -> dict:
    """The ``claims`` parameter (OIDC Core §5.5), shape-checked; {} when absent."""
    raw = data.get("claims")
    if raw is None:
        return {}
    try:
        claims = jsonlimits.loads(raw, max_bytes=MAX_CLAIMS_BYTES)
    except jsonlimits.JSONLimitError as exc:
        raise InvalidRequestError(INVALID_CLAIMS) from exc
    if not isinstance(claims, dict):
        raise InvalidRequestError(INVALID_CLAIMS)
    for member in ("id_token", "userinfo"):
        requests = claims.get(member)
        if requests is None:
            continue
        if not isinstance(requests, dict):
            raise InvalidRequestError(INVALID_CLAIMS)
        if not all(value is None or isinstance(value, dict) for value in requests.values()):
            raise InvalidRequestError(INVALID_CLAIMS)
    return claims


def _acr_request(data) -> dict | None:
    return (parsed_claims(data).get("id_token") or {}).get("acr")


def essential_acr(data) -> list[str] | None:
    """The known acr values an essential ``acr`` claim request accepts (OIDC Core §5.5.1.1:
    one must be met, or the authentication fails); None when acr is not essential."""
    request = _acr_request(data)
    if not request or request.get("essential") is not True:
        return None
    return [value for value in _acr_values(request) if value in assurance.RANKS]


def _acr_values(request: dict) -> list[str]:
    values = request.get("values")
    if not isinstance(values, list):
        values = [request.get("value")]
    return [value for value in values if isinstance(value, str)]


def requested_acr(data) -> list[str]:
    """The acr values the login must reach one of (step-up: a lower session logs in again).

    An essential ``acr`` in ``claims`` is a requirement and wins; otherwise ``acr_values``
    and a voluntary ``acr`` request count alike (both are requests the provider honours)."""
    essential = essential_acr(data)
    if essential is not None:
        return essential
    voluntary = _acr_values(_acr_request(data) or {})
    return (data.get("acr_values") or "").split() + voluntary


class AuthorizationRequestRules:
    """Mixed into the code grant, ahead of Authlib's ``AuthorizationCodeGrant``."""

    def __init__(self, request, server) -> None:
        super().__init__(request, server)
        self.register_hook(
            "before_validate_authorization_request_payload", refuse_what_is_not_supported
        )

    @staticmethod
    def validate_authorization_redirect_uri(request, client) -> str:
        return check_redirect_uri(request.payload.redirect_uri, client)


class ProviderAuthorizationServer(AuthorizationServer):
    def create_oauth2_request(self, request):
        """The request being served, or the one given (Authlib's Flask server ignores it): an
        authorization request kept while the practitioner signed in, answered at the end of
        the login (``idp.oauth.views.answer_kept_request``)."""
        return FlaskOAuth2Request(flask_request if request is None else request)

    def get_authorization_grant(self, request):
        """Authlib checks ``response_type`` first and echoes it into its description: here the
        client and its redirect URI come first (an error page), then an unsupported
        ``response_type`` is redirected, without echoing it."""
        if request.payload.response_type in RESPONSE_TYPES:
            return super().get_authorization_grant(request)
        client_id = request.payload.client_id
        client = self.query_client(client_id)
        if client is None:
            raise InvalidClientError(description=UNKNOWN_CLIENT if client_id else MISSING_CLIENT_ID)
        redirect_uri = check_redirect_uri(request.payload.redirect_uri, client)
        response_type = request.payload.response_type or ""
        raise UnsupportedResponseTypeError(
            response_type if is_printable_ascii(response_type) else "(invalid)",
            redirect_uri=redirect_uri,
        )

    def respond(self, grant, end_user):
        """The answer to a request ``get_consent_grant`` has just validated: Authlib's
        ``create_authorization_response`` without validating the request a second time (the
        same checks, the nonce's lookup included, on the same request)."""
        try:
            args = grant.create_authorization_response(grant.redirect_uri, end_user)
            response = self.handle_response(*args)
        except OAuth2Error as error:
            error.state = grant.request.payload.state
            response = self.handle_error_response(grant.request, error)
        grant.execute_hook("after_authorization_response", response)
        return response
