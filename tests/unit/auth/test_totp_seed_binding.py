"""TOTP seeds are encrypted bound to their row: copied to another row, they do not decrypt."""

from __future__ import annotations

import pytest

from idp.crypto import DataCipher, DecryptionError
from idp.factors.totp import method as totp_method
from idp.models import TotpDevice
from tests.support import factories

CIPHER = DataCipher("d" * 40)


def test_a_seed_copied_to_another_row_does_not_decrypt(db, clock):
    owner = factories.practitioner(db, clock)
    first, secret = factories.pending_totp_device(db, clock, owner, cipher=CIPHER)
    second, _ = factories.pending_totp_device(db, clock, owner, cipher=CIPHER, name="App 2")
    assert totp_method.pending_secret(first, CIPHER) == secret
    second.secret_encrypted = first.secret_encrypted  # same practitioner, another row
    with pytest.raises(DecryptionError):
        totp_method.pending_secret(second, CIPHER)
    other = factories.practitioner(db, clock)
    moved = TotpDevice(
        id=first.id, practitioner_id=other.id, name="x", secret_encrypted=first.secret_encrypted
    )
    with pytest.raises(DecryptionError):  # the same row id under another practitioner
        totp_method.pending_secret(moved, CIPHER)
