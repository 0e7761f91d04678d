"""Onboarding an organisation from a CSV file: every bad row reported with its line number,
nothing half-imported, a dry run that changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from idp.accounts import service
from idp.crypto import hash_token
from idp.db import get_db
from idp.models import AuditEvent, Invitation, Practitioner

HEADER = "rpps,given_name,family_name,profession_code,email\n"
GOOD = HEADER + (
    "10000000017,Jules,Durand,10,jules@example.fr\n\n10000000025,Ana,Roux,21,ana@example.fr\n"
)
BAD = HEADER + (
    "10000000017,Jules,Durand,10,jules@example.fr\n"  # line 2: fine
    "1234,Léa,Petit,10,lea@example.fr\n"  # line 3: RPPS
    "10000000033,Marc,Blanc,10,jules@example.fr\n"  # line 4: the email of line 2
    "10000000041,Inès,Noir,99,ines@example.fr\n"  # line 5: profession
)


def count(model) -> int:
    return get_db().execute(select(func.count()).select_from(model)).scalar_one()


def test_every_bad_row_is_reported_and_nothing_is_imported(app, clock):
    with app.app_context():
        with pytest.raises(service.ImportRejectedError) as rejected:
            service.import_practitioners(
                get_db(), service.read_import(BAD), clock=clock, dry_run=False
            )
        assert [line for line, _ in rejected.value.problems] == [3, 4, 5]
        assert "RPPS" in rejected.value.problems[0][1]
        assert "already exists" in rejected.value.problems[1][1]
        assert "profession" in rejected.value.problems[2][1]
        get_db().commit()
        assert count(Practitioner) == 0 and count(Invitation) == 0  # line 2 did not stay


def test_a_dry_run_checks_and_changes_nothing(app, clock):
    with app.app_context():
        checked = service.import_practitioners(
            get_db(), service.read_import(GOOD), clock=clock, dry_run=True
        )
        assert [(p.rpps, token) for p, token in checked] == [
            ("10000000017", None),
            ("10000000025", None),
        ]
        get_db().commit()
        assert count(Practitioner) == 0 and count(AuditEvent) == 0


def test_an_import_invites_everyone_once(app, clock):
    with app.app_context():
        db = get_db()
        imported = service.import_practitioners(
            db, service.read_import(GOOD.replace(",", ";")), clock=clock, dry_run=False
        )
        db.commit()
        assert [p.status for p, _ in imported] == ["invited", "invited"]
        for practitioner, token in imported:  # stored hashed, one per practitioner
            invitation = db.execute(
                select(Invitation).where(Invitation.practitioner_id == practitioner.id)
            ).scalar_one()
            assert invitation.token_hash == hash_token(token) != token
        with pytest.raises(service.ImportRejectedError) as again:
            service.import_practitioners(db, service.read_import(GOOD), clock=clock, dry_run=False)
        assert [line for line, _ in again.value.problems] == [2, 4]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("rpps;email\n10000000017;a@example.fr\n", "missing column(s): given_name"),
        (HEADER, "no practitioner in the file"),
        ("", "missing column(s): rpps"),
    ],
)
def test_a_file_that_cannot_be_imported_says_why(app, clock, text, problem):
    with app.app_context(), pytest.raises(service.ImportRejectedError) as rejected:
        service.import_practitioners(
            get_db(), service.read_import(text), clock=clock, dry_run=False
        )
    [(line, message)] = rejected.value.problems
    assert line == 1 and message.startswith(problem)
