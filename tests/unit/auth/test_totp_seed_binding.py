"""TOTP seeds are encrypted bound to their row: copied to another row, they do not decrypt."""

from __future__ import annotations

import pytest

from idp.accounts import service as accounts
from idp.crypto import DataCipher, DecryptionError
from idp.factors.totp import method as totp_method
from idp.models import TotpDevice

CIPHER = DataCipher("d" * 40)


def practitioner(db, clock, n):
    return accounts.create_practitioner(
        db,
        rpps=f"1000000001{n}",
        given_name="Camille",
        family_name="Martin",
        profession_code="10",
        email=f"camille{n}@demo.sante.fr",
        clock=clock,
    )


def test_a_seed_copied_to_another_row_does_not_decrypt(db, clock):
    owner = practitioner(db, clock, 1)
    first, secret = totp_method.start_totp_enrolment(
        db, practitioner=owner, name="App", clock=clock, cipher=CIPHER
    )
    second, _ = totp_method.start_totp_enrolment(
        db, practitioner=owner, name="App 2", clock=clock, cipher=CIPHER
    )
    assert totp_method.pending_secret(first, CIPHER) == secret
    second.secret_encrypted = first.secret_encrypted  # same practitioner, another row
    with pytest.raises(DecryptionError):
        totp_method.pending_secret(second, CIPHER)
    other = practitioner(db, clock, 2)
    moved = TotpDevice(
        id=first.id, practitioner_id=other.id, name="x", secret_encrypted=first.secret_encrypted
    )
    with pytest.raises(DecryptionError):  # the same row id under another practitioner
        totp_method.pending_secret(moved, CIPHER)
