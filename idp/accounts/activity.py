"""The security history in the practitioner's words: each audit event as a short sentence.

Events are ``source:subject:action`` tags (``idp.audit``); the ones a practitioner causes or
should know about have a label here, any other gets a generic one (the history still shows
when and from where).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from idp.accounts.selfservice import Browser, describe_user_agent
from idp.models import AuditEvent

LABELS = {
    "auth:password:succeeded": _l("Password entered"),
    "auth:password:failed": _l("Wrong password entered"),
    "auth:totp:succeeded": _l("Signed in with a code from your authenticator app"),
    "auth:totp:failed": _l("Wrong code entered"),
    "auth:totp:refused": _l("Sign-in with a code refused"),
    "auth:webauthn:succeeded": _l("Signed in with a security key"),
    "auth:webauthn:failed": _l("Sign-in with a security key failed"),
    "auth:webauthn:refused": _l("Sign-in with a security key refused"),
    "auth:webauthn:possible_clone": _l("A security key was blocked: it may have been copied"),
    "auth:smartcard:succeeded": _l("CPS card checked"),
    "auth:smartcard:completed": _l("Signed in with a CPS card"),
    "auth:smartcard:failed": _l("Sign-in with a CPS card failed"),
    "auth:smartcard:refused": _l("Sign-in with a CPS card refused"),
    "auth:login:completed": _l("Signed in"),
    "auth:login:restarted": _l("Sign-in abandoned (Not you?)"),
    "auth:session:logout": _l("Signed out"),
    "account:two_factor:method_added": _l("Sign-in method added"),
    "account:two_factor:method_removed": _l("Sign-in method removed"),
    "account:two_factor:method_renamed": _l("Security key renamed"),
    "account:two_factor:all_revoked": _l("Every sign-in method removed by an administrator"),
    "account:recovery_codes:generated": _l("Recovery codes generated"),
    "account:recovery_codes:used": _l("Recovery code used"),
    "account:password:set": _l("Password chosen"),
    "account:password:changed": _l("Password changed"),
    "account:invitation:created": _l("Invitation sent"),
    "account:invitation:resent": _l("Invitation sent again"),
    "account:invitation:accepted": _l("Account activated"),
    "account:practitioner:created": _l("Account created"),
    "account:practitioner:imported": _l("Account created"),
    "account:practitioner:disabled": _l("Account suspended by an administrator"),
    "account:practitioner:enabled": _l("Account restored by an administrator"),
    "account:session:signed_out": _l("A session was signed out from this page"),
    "account:session:signed_out_everywhere": _l("Signed out everywhere"),
    "account:consent:revoked": _l("Access of an application revoked"),
    "account:not_me": _l("Reported as not you: every session signed out"),
    "oauth:consent:granted": _l("Access given to an application"),
    "oauth:token:issued": _l("Sign-in to an application"),
    "oauth:code:reused": _l("A sign-in code was used twice: its access was revoked"),
}
GENERIC = _l("Other security event")


@dataclass(frozen=True)
class ActivityEntry:
    id: int
    label: str
    at: dt.datetime
    ip: str | None
    browser: str


def label(event: str) -> str:
    return str(LABELS.get(event, GENERIC))


def browser_label(browser: Browser) -> str:
    """ "Firefox on Windows", "Firefox", "Windows", or "Unknown browser"."""
    if browser.name and browser.system:
        return _("%(browser)s on %(system)s", browser=browser.name, system=browser.system)
    return browser.name or browser.system or _("Unknown browser")


def describe(event: AuditEvent) -> ActivityEntry:
    return ActivityEntry(
        id=event.id,
        label=label(event.event),
        at=event.at,
        ip=event.ip,
        browser=browser_label(describe_user_agent(event.user_agent)),
    )
