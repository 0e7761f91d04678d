"""The authorization request, checked in the order the standards imply, before Authlib's own
checks: who the client is and where the answer may go (an error page until both are known,
never a redirect), then what this provider does not implement, then what is missing.

Authlib echoes some request values into its error descriptions, and a description outside
RFC 6749's restricted ASCII makes it raise ``ValueError`` (HTTP 500): the values it would echo
are checked here first, and the descriptions below never contain request input.
"""

from __future__ import annotations

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import InvalidRequestError, UnsupportedResponseTypeError

RESPONSE_TYPES = ("code",)


def is_printable_ascii(value: str) -> bool:
    """Printable ASCII only (RFC 3986): no control character, space or raw non-ASCII."""
    return all(0x21 <= ord(char) <= 0x7E for char in value)


def check_redirect_uri(uri: str | None, client) -> str:
    """The redirect URI the answer may go to; raises (no redirect: an error page) otherwise.

    OpenID Connect Core §3.1.2.1: ``redirect_uri`` is required, even when the client has a
    single registered URI (OAuth 2.0 would fall back to it), and must match one exactly.
    """
    if not uri:
        raise InvalidRequestError("Missing 'redirect_uri' parameter.")
    if not is_printable_ascii(uri):
        raise InvalidRequestError("Invalid 'redirect_uri': characters outside printable ASCII.")
    if not client.check_redirect_uri(uri):
        raise InvalidRequestError("The 'redirect_uri' is not registered for this client.")
    return uri


class AuthorizationRequestRules:
    """Mixed into the code grant, ahead of Authlib's ``AuthorizationCodeGrant``."""

    @staticmethod
    def validate_authorization_redirect_uri(request, client) -> str:
        return check_redirect_uri(request.payload.redirect_uri, client)


class ProviderAuthorizationServer(AuthorizationServer):
    def get_authorization_grant(self, request):
        """Authlib echoes an unknown ``response_type`` into its description: answer it here."""
        response_type = request.payload.response_type
        if response_type in RESPONSE_TYPES:
            return super().get_authorization_grant(request)
        redirect_uri = None
        client = self.query_client(request.payload.client_id)
        if client is not None:
            try:
                redirect_uri = check_redirect_uri(request.payload.redirect_uri, client)
            except InvalidRequestError:
                redirect_uri = None
        raise UnsupportedResponseTypeError(
            response_type if is_printable_ascii(response_type or "") else "(invalid)",
            redirect_uri=redirect_uri,
        )
