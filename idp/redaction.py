"""One-time secrets and personal data out of the logs.

Some secrets travel in URLs: the invitation token in ``/enrol/<token>``, the reset token in
``/password/reset/<token>``, the terminal card code
in ``/smartcard/code/<code>``, and whatever a client puts in a query string by mistake
(``code``, ``access_token``…). Every URL a log line carries goes through :func:`redact_uri`
first, which is pure: it changes nothing but the secret parts.

``state`` and ``nonce`` are kept: they are chosen by the client, grant nothing on their own, and
are what an operator follows a flow by. ``login_hint`` is redacted: it is personal data.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

REDACTED = "[redacted]"

#: Query parameters whose values are credentials, one-time secrets or personal data.
SECRET_PARAMETERS = frozenset(
    {
        "access_token",
        "client_assertion",
        "client_secret",
        "code",
        "code_verifier",
        "id_token",
        "id_token_hint",
        "login_hint",
        "password",
        "refresh_token",
        "token",
    }
)
#: Query parameters that are secret on one route only (the TLS card login's hand-offs).
ROUTE_SECRET_PARAMETERS = {
    "/login/card/tls": frozenset({"t"}),
    "/login/card/tls/return": frozenset({"r"}),
    # The language switch's return address is any page, with whatever secret that page has.
    "/language/fr": frozenset({"next"}),
    "/language/en": frozenset({"next"}),
}
#: ``/enrol/<token>`` shares its prefix with the enrolment steps, which are kept.
ENROL_STEPS = frozenset({"totp", "webauthn"})

# Between path segments: ``/``, or ``%2F``, which the router decodes into a ``/``.
_SEPARATOR = re.compile(r"/|%2f", re.IGNORECASE)
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#]*", re.IGNORECASE)
_WORD = re.compile(r"[^\s'\"]+")


def _segments(path: str) -> list[tuple[int, str]]:
    """Non-empty segments with their offsets."""
    found, start = [], 0
    for separator in [*_SEPARATOR.finditer(path), None]:
        end = separator.start() if separator else len(path)
        if end > start:
            found.append((start, path[start:end]))
        start = separator.end() if separator else end
    return found


def _secret_from(segments: list[str], index: int) -> bool:
    """Is the segment after ``segments[index]`` a secret?"""
    name = segments[index]
    if name == "enrol":
        return segments[index + 1] not in ENROL_STEPS
    if name == "recover":
        return True
    if name == "reset" and index > 0 and segments[index - 1] == "password":
        return True  # the emailed password-reset link
    return name == "code" and index > 0 and segments[index - 1] == "smartcard"


def redact_path(path: str) -> str:
    """``/enrol/<token>``, ``/password/reset/<token>`` and ``/smartcard/code/<code>``: the
    secret and anything after it go.

    Segments compare as the router sees them (percent-decoded, empty ones skipped) and without
    regard to case, so that no spelling of a secret route keeps its secret."""
    if not path:
        return path
    found = _segments(path)
    names = [unquote(segment).lower() for _start, segment in found]
    for index in range(len(found) - 1):
        if _secret_from(names, index):
            return path[: found[index + 1][0]] + REDACTED
    return path


def redact_query(query: str, path: str = "") -> str:
    """Values of :data:`SECRET_PARAMETERS` (and of the route's own) become ``[redacted]``."""
    if not query:
        return query
    route = unquote(path).rstrip("/")
    secret = SECRET_PARAMETERS.union(
        *(names for suffix, names in ROUTE_SECRET_PARAMETERS.items() if route.endswith(suffix))
    )
    pieces = query.split("&")
    for index, piece in enumerate(pieces):
        name, equals, _value = piece.partition("=")
        if equals and unquote_plus(name).strip().lower() in secret:
            pieces[index] = f"{name}={REDACTED}"
    return "&".join(pieces)


def redact_uri(uri: str) -> str:
    """A request target or a full URL (a Referer, a Location), with its secrets redacted."""
    if not uri or uri == "-":
        return uri
    origin = _ORIGIN.match(uri)
    head = origin.group() if origin else ""
    rest, hash_, fragment = uri[len(head) :].partition("#")
    path, question, query = rest.partition("?")
    # A fragment is never sent to us, but a Referer may carry an implicit flow's tokens.
    fragment = redact_query(fragment) if hash_ else ""
    return head + redact_path(path) + question + redact_query(query, path) + hash_ + fragment


def redact_text(text: str) -> str:
    """Every whitespace-separated word of a free-form message, as a URL."""
    return _WORD.sub(lambda match: redact_uri(match.group()), text)


MASK = "\u2022"  # •


def mask_identifier(value: str) -> str:
    """An identifier shown to whoever holds the screen, enough to recognise one's own account
    and no more: an RPPS keeps its first and last three digits (``100•••••009``), an e-mail
    address its first letter and its domain (``c•••@demo.sante.fr``). Shorter values keep less:
    at least a third of the characters is always hidden."""
    value = value or ""
    if "@" in value:
        local, _, domain = value.rpartition("@")
        return (local[:1] if len(local) > 1 else "") + MASK * 3 + "@" + domain
    keep = max(0, min(3, (len(value) - 1) // 3))
    if keep == 0:
        return MASK * len(value)
    return value[:keep] + MASK * (len(value) - 2 * keep) + value[-keep:]
