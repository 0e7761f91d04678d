"""What a person reads when an authorization request cannot go back to the application.

An OAuth error description is for the client's developer: English, restricted ASCII, and it
stays in what is sent to the client, never on a page. The page shown instead of a redirect
(unknown client, redirect URI in doubt) says, in the practitioner's language, what happened
and what to do. One table: the first row whose error and description prefix match gives the
message and the short name of the case (for the log and the audit trail).
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask_babel import lazy_gettext as _l

from idp.oauth import validation

PAGE_MESSAGES = (
    (
        "invalid_client",
        validation.MISSING_CLIENT_ID,
        "missing_client_id",
        _l(
            "The application did not identify itself (client_id is missing). "
            "Tell the application's support."
        ),
    ),
    (
        "invalid_client",
        "",
        "unknown_client",
        _l(
            "This application is not known to this service. Check the link you followed, or "
            "tell the application's support."
        ),
    ),
    (
        "invalid_request",
        validation.MISSING_REDIRECT_URI,
        "missing_redirect_uri",
        _l(
            "The application did not say where to send you back (redirect_uri is missing). "
            "Tell the application's support."
        ),
    ),
    (
        "invalid_request",
        validation.INVALID_REDIRECT_URI,
        "invalid_redirect_uri",
        _l(
            "The application's return address (redirect_uri) is malformed. "
            "Tell the application's support."
        ),
    ),
    (
        "invalid_request",
        validation.UNREGISTERED_REDIRECT_URI,
        "unregistered_redirect_uri",
        _l(
            "The application asked to send you back to an address (redirect_uri) it has not "
            "registered with this service: you are not sent there. "
            "Tell the application's support."
        ),
    ),
    (
        "invalid_request",
        "Multiple '",
        "repeated_parameter",
        _l(
            "The application's sign-in request repeats a parameter. Tell the application's support."
        ),
    ),
    (
        "invalid_request",
        "Missing 'code_challenge'",
        "pkce",
        _l(
            "The application's sign-in request lacks its protection code (PKCE). "
            "Tell the application's support."
        ),
    ),
    (
        "invalid_request",
        "Invalid 'code_challenge'",
        "pkce",
        _l(
            "The application's sign-in request has an invalid protection code (PKCE). "
            "Tell the application's support."
        ),
    ),
    (
        "invalid_request",
        "Unsupported 'code_challenge_method'",
        "pkce",
        _l(
            "The application's sign-in request uses a protection method (PKCE) this service "
            "does not accept. Tell the application's support."
        ),
    ),
    (
        "invalid_request",
        "Missing '",
        "missing_parameter",
        _l(
            "The application's sign-in request is incomplete: a parameter is missing. "
            "Tell the application's support."
        ),
    ),
    (
        "unsupported_response_type",
        "",
        "unsupported_response_type",
        _l(
            "The application asked for a kind of sign-in this service does not offer. "
            "Tell the application's support."
        ),
    ),
    (
        "invalid_scope",
        "",
        "invalid_scope",
        _l(
            "The application asked for information this service does not give it. "
            "Tell the application's support."
        ),
    ),
    (
        "access_denied",
        "",
        "access_denied",
        _l("The sign-in was cancelled. Go back to the application to start again."),
    ),
)
FALLBACK_CODE = "invalid_request"
FALLBACK = _l("The application's sign-in request is invalid. Tell the application's support.")


def page_case(error: OAuth2Error) -> tuple[str, str]:
    """``(code, message)``: the case's short name and what the page says."""
    description = error.description or ""
    for error_code, prefix, code, message in PAGE_MESSAGES:
        if error.error == error_code and description.startswith(prefix):
            return code, str(message)
    return FALLBACK_CODE, str(FALLBACK)


def page_message(error: OAuth2Error) -> str:
    return page_case(error)[1]
