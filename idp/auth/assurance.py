"""Assurance levels: one table, used by tokens, discovery, step-up and the README.

| acr                  | rank | reached by                                   | phishing-resistant |
|----------------------|------|----------------------------------------------|--------------------|
| substantial          | 1    | password + TOTP; password + push (number)    | no                 |
| phr                  | 2    | WebAuthn with user verification              | yes                |
| phrh                 | 3    | smart card + PIN; attested hardware key + UV | yes                |

``phr``/``phrh`` are the OpenID EAP ACR values. A recovery-code login is ``recovery``, a level
of its own that ranks below every level above (rank 0, like no login): it may only enrol a new
factor, and never reaches an application.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

SUBSTANTIAL = "substantial"
PHISHING_RESISTANT = "phr"
HIGH = "phrh"
RECOVERY = "recovery"
"""A limited login (a recovery code): not in RANKS, so it satisfies no level."""

RANKS = {SUBSTANTIAL: 1, PHISHING_RESISTANT: 2, HIGH: 3}
SUPPORTED = tuple(RANKS)


def rank(acr: str | None) -> int:
    return RANKS.get(acr or "", 0)


def satisfies(achieved: str | None, requested: list[str]) -> bool:
    """True when the achieved level is at least the lowest level the client accepts."""
    wanted = [rank(value) for value in requested if value in RANKS]
    if not wanted:
        return True  # only unknown values requested: nothing we can enforce
    return rank(achieved) >= min(wanted)


def required_level(requested: list[str]) -> str | None:
    known = [value for value in requested if value in RANKS]
    return min(known, key=rank) if known else None


LEVEL_LABELS = {
    SUBSTANTIAL: _l("substantial"),
    PHISHING_RESISTANT: _l("phishing-resistant"),
    HIGH: _l("high"),
    RECOVERY: _l("limited: recovery code"),
}
METHOD_LABELS = {  # RFC 8176 values, as practitioners know them; mfa/user/pin are implied
    "pwd": _l("password"),
    "otp": _l("authenticator app code"),
    "hwk": _l("security key"),
    "swk": _l("passkey"),
    "sc": _l("CPS card"),
    "recovery": _l("recovery code"),
}


def describe(auth) -> str:
    """'password + authenticator app code (substantial)' for the account page."""
    methods = " + ".join(str(METHOD_LABELS[m]) for m in auth.amr if m in METHOD_LABELS)
    return f"{methods} ({LEVEL_LABELS.get(auth.acr, auth.acr)})"
