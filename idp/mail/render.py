"""Messages written at queue time, in the practitioner's language (``practitioners.language``).

Each event has ``templates/mail/<event>.txt`` and ``templates/mail/<event>.html`` (extending
``_base.txt`` / ``_base.html``) and a subject here. Dates are shown in the deployment's time
zone (``IDP_TIME_ZONE``) and the message's language. Only the invitation, the password reset
and the approved recovery carry a link (``link``); every other message points at the account
page, which is not a login link.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from flask import current_app, render_template
from flask_babel import force_locale, format_datetime
from flask_babel import lazy_gettext as _l

from idp.i18n import LANGUAGES

LINK_EVENTS = frozenset({"invitation", "password_reset", "recovery_approved"})
"""The only messages that carry a link that acts on the account (it holds a secret)."""

SUBJECTS = {
    "invitation": _l("Your invitation to %(service)s"),
    "factor_added": _l("A sign-in method was added to your account"),
    "factor_removed": _l("A sign-in method was removed from your account"),
    "factor_flagged": _l("A security key on your account may have been copied"),
    "recovery_codes_used": _l("A recovery code was used on your account"),
    "recovery_codes_regenerated": _l("New recovery codes for your account"),
    "recovery_requested": _l("A recovery of your account was requested"),
    "recovery_approved": _l("The recovery of your account was approved"),
    "recovery_cancelled": _l("The recovery of your account was cancelled"),
    "recovery_completed": _l("Your account was recovered"),
    "password_reset": _l("Choose a new password"),
    "password_changed": _l("Your password was changed"),
    "not_me": _l("You reported activity that was not you"),
    "failed_attempts": _l("Failed sign-in attempts on your account"),
}

METHOD_LABELS = {
    "totp": _l("authenticator app"),
    "webauthn": _l("security key or passkey"),
    "smartcard": _l("CPS card"),
    "recovery_code": _l("recovery code"),
}

DATE_FORMAT = "d MMMM y, HH:mm"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def language_of(practitioner) -> str:
    language = getattr(practitioner, "language", None)
    return language if language in LANGUAGES else "fr"


def render(practitioner, event: str, context: dict[str, Any], *, now: dt.datetime) -> Rendered:
    """The subject and both bodies of ``event`` for ``practitioner`` (needs an app context)."""
    if event not in SUBJECTS:
        raise KeyError(event)
    if (event in LINK_EVENTS) != bool(context.get("link")):
        raise ValueError(f"{event}: a link belongs to {', '.join(sorted(LINK_EVENTS))} only")
    settings = current_app.extensions["idp.settings"]
    with force_locale(language_of(practitioner)):
        values = {key: display(value) for key, value in context.items()}
        if "method" in values:
            label = METHOD_LABELS.get(str(context["method"]))
            values["method"] = str(label) if label is not None else values["method"]
        values.update(
            practitioner=practitioner,
            service=settings.issuer_name,
            account_url=f"{settings.issuer}/account",
            at=format_datetime(now, DATE_FORMAT),
            # Translated, with the service's name where the subject has a place for it.
            subject=str(SUBJECTS[event]) % {"service": settings.issuer_name},
        )
        return Rendered(
            subject=values["subject"],
            text=tidy(render_template(f"mail/{event}.txt", **values)),
            html=render_template(f"mail/{event}.html", **values),
        )


def tidy(text: str) -> str:
    """Plain text as a mail client shows it: no trailing spaces, one blank line between
    paragraphs."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def display(value: Any) -> Any:
    """Dates in the message's language and the deployment's time zone; the rest as given."""
    if isinstance(value, dt.datetime):
        return format_datetime(value, DATE_FORMAT)
    return value
