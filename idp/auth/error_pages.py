"""One page shape for every error a person sees.

Each page says what happened and what to do, carries a short reference the practitioner can
read out to support, and leads somewhere: back to the application when its return address is
registered for it, else to the account page (which sends to the login when not signed in).

The same reference is in the server log line and, when the error interrupted someone's sign-in
(a completed login, or the password step done), in the audit trail (``site:error:shown``, on
that practitioner), so support finds the occurrence from what the practitioner reads out. An
anonymous error is in the log only: anyone may ask for any address, and the append-only trail
must not grow with that. A GET route declared read-only (``get_changes_state=False``) writes
nothing either.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask import current_app, render_template, request, url_for
from flask_babel import gettext as _

from idp import audit
from idp.auth.flow import LoginState
from idp.auth.policy import endpoint_get_changes_state
from idp.db import get_db
from idp.redaction import redact_path

#: No 0/O, 1/I/L, U: nothing to confuse when read out over the phone.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_LENGTH = 8


@dataclass(frozen=True)
class Back:
    """Where the page leads: a URL and the words of the link."""

    url: str
    label: str


def new_reference() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(REFERENCE_LENGTH))


def account_back() -> Back:
    return Back(url_for("accounts.home"), _("Go to my account"))


def render_error(message: str, status: int, *, back: Back | None = None, code: str = "error"):
    """The error page, its log line and its audit event; returns ``(html, status)``.

    ``code`` is a short machine name of the case (no secret, no user input)."""
    reference = new_reference()
    current_app.logger.warning(
        "Error page %s: status=%s code=%s %s %s",
        reference,
        status,
        code,
        request.method,
        redact_path(request.path),
    )
    _audit(reference, status, code)
    html = render_template(
        "error.html", message=str(message), reference=reference, back=back or account_back()
    )
    return html, status


def _person() -> int | None:
    """Whose sign-in this error interrupted: the completed login, or the password step."""
    state = LoginState.current()
    if state.completed is not None:
        return state.completed.practitioner_id
    if state.first_factor is not None:
        return state.first_factor.practitioner_id
    return None


def _audit(reference: str, status: int, code: str) -> None:
    """Committed on its own: whatever the request left half done is rolled back first (the end
    of the request would have rolled it back anyway). A trail out of reach never turns the
    page into another error."""
    if request.method in ("GET", "HEAD") and (
        endpoint_get_changes_state(current_app, request.endpoint) is False
    ):
        return  # a GET declared read-only writes nothing, not even this: the log line has it
    person = _person()
    if person is None:
        return  # anyone may ask for anything: an anonymous error never grows the trail
    db = get_db()
    try:
        db.rollback()
        audit.record(
            db,
            "site:error:shown",
            practitioner_id=person,
            reference=reference,
            status=status,
            code=code,
        )
        db.commit()
    except Exception:  # noqa: BLE001 - the page is shown regardless; the log line has the reference
        db.rollback()
        current_app.logger.exception("Error page %s: audit event not recorded", reference)
