"""What a person reads when an authorization request cannot go back to the application.

An OAuth error description is for the client's developer: English, restricted ASCII, and it
stays in what is sent to the client. The page shown instead of a redirect (unknown client,
redirect URI in doubt) says it in the practitioner's language. One table: the first row whose
error and description prefix match gives the message.
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from flask_babel import lazy_gettext as _l

from idp.oauth import validation

PAGE_MESSAGES = (
    (
        "invalid_client",
        validation.MISSING_CLIENT_ID,
        _l("The application did not identify itself (client_id is missing)."),
    ),
    ("invalid_client", "", _l("This application is not known to this service.")),
    (
        "invalid_request",
        validation.MISSING_REDIRECT_URI,
        _l(
            "The application did not say where to send you back (redirect_uri is missing). "
            "Tell the application's support."
        ),
    ),
    (
        "invalid_request",
        validation.INVALID_REDIRECT_URI,
        _l("The application's return address (redirect_uri) is malformed."),
    ),
    (
        "invalid_request",
        validation.UNREGISTERED_REDIRECT_URI,
        _l(
            "The application asked to send you back to an address (redirect_uri) it has not "
            "registered with this service: you are not sent there."
        ),
    ),
    (
        "invalid_request",
        "Multiple '",
        _l("The application's sign-in request repeats a parameter."),
    ),
    (
        "unsupported_response_type",
        "",
        _l("The application asked for a kind of sign-in this service does not offer."),
    ),
)
FALLBACK = _l("The application's sign-in request is invalid. Tell the application's support.")


def page_message(error: OAuth2Error) -> str:
    description = error.description or ""
    for code, prefix, message in PAGE_MESSAGES:
        if error.error == code and description.startswith(prefix):
            return str(message)
    return str(FALLBACK)
