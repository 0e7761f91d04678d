"""A new password: long enough, and none of the practitioner's own details or simple runs
(NIST SP 800-63B), none from the blocklist of leaked passwords, with no composition rules."""

from __future__ import annotations

import pytest

from idp.accounts import passwords
from idp.db import get_db
from idp.models import Practitioner
from tests.support import factories
from tests.support.oidc import UserAgent

OWN = "Choose a password that does not contain your name, RPPS number or email."
RUN = "Choose a password that is not a run of repeated or consecutive characters."
COMMON = "This password is too common: it appears in lists of leaked passwords. Choose another."


def someone() -> Practitioner:
    return Practitioner(
        rpps="10000000025",
        given_name="Hélène",
        family_name="Le Goff-Marchand",
        email="h.legoff@example.fr",
    )


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ("mon-code-10000000025", OWN),
        ("HELENE-aime-le-soleil", OWN),  # accents and case do not matter
        ("vive-marchand-2026!", OWN),  # one part of a compound name
        ("h.legoff-secret-long", OWN),
        ("aaaaaaaaaaaa", RUN),
        ("abababababab", RUN),
        ("123456789012", RUN),
        ("zyxwvutsrqpo", RUN),
        ("password1234", COMMON),
        ("Password1234", COMMON),  # the list is checked in lower case too
        ("azertyuiop123", COMMON),
        ("soleil123456", COMMON),
        ("cheval agrafe batterie", None),  # no composition rule: a passphrase is fine
        ("le gouffre du pirate", None),  # "le" alone is too short to refuse
    ],
)
def test_what_a_new_password_may_not_be(app, password, expected):
    with app.test_request_context(headers={"Accept-Language": "en"}):
        assert passwords.problem(password, someone()) == expected


@pytest.mark.parametrize(
    ("password", "expected"),
    [("leo et la valse du soir", OWN), ("li et la valse du soir", None)],
)
def test_a_name_part_counts_from_three_letters(app, password, expected):
    """``MIN_WORD`` is 3: "Léo" is refused inside a password, "Li" is not."""
    short = Practitioner(
        rpps="10000000033", given_name="Léo", family_name="Li", email="x9@example.fr"
    )
    with app.test_request_context(headers={"Accept-Language": "en"}):
        assert passwords.problem(password, short) == expected


def test_the_invitation_page_refuses_the_own_rpps_and_accepts_a_passphrase(live_server):
    with live_server.app.app_context():
        db = get_db()
        clock = live_server.app.extensions["idp.clock"]
        _, token = factories.invited(db, clock, rpps="10000000025", email="ana@demo.sante.fr")
        db.commit()
    agent = UserAgent(live_server.url)
    page = agent.get(f"/enrol/{token}")
    refused = agent.post(
        "/enrol", {"password": "x10000000025x", "confirm": "x10000000025x"}, page.text
    )
    assert refused.status_code == 400 and 'aria-invalid="true"' in refused.text
    assert "ne contienne pas votre nom" in refused.text
    accepted = agent.post(
        "/enrol",
        {"password": "cheval agrafe batterie", "confirm": "cheval agrafe batterie"},
        refused.text,
    )
    assert accepted.url.endswith("/enrol/totp")
