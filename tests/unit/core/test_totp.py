import datetime as dt

import pyotp
import pytest

from idp.factors.totp import verify as totp

NOW = dt.datetime(2026, 3, 1, 12, 0, 15, tzinfo=dt.UTC)


def code(secret, seconds):
    return pyotp.TOTP(secret).at(NOW + dt.timedelta(seconds=seconds))


def test_secret_is_160_bits():
    import base64

    assert len(base64.b32decode(totp.generate_secret())) == 20


@pytest.mark.parametrize("offset", [-30, 0, 30])
def test_one_step_of_drift_is_accepted(offset):
    secret = totp.generate_secret()
    step = totp.verify(secret=secret, code=code(secret, offset), now=NOW, last_used_step=None)
    assert step == totp.time_step(NOW) + offset // 30


@pytest.mark.parametrize("offset", [-60, 60, 150, 300])
def test_codes_further_away_are_just_wrong(offset):
    """No "out of sync" answer: it would tell an attacker the guess works later."""
    secret = totp.generate_secret()
    with pytest.raises(totp.InvalidCodeError):
        totp.verify(secret=secret, code=code(secret, offset), now=NOW, last_used_step=None)


def test_step_already_used_or_older_is_a_replay():
    secret = totp.generate_secret()
    current = totp.time_step(NOW)
    with pytest.raises(totp.ReplayedCodeError):
        totp.verify(secret=secret, code=code(secret, 0), now=NOW, last_used_step=current)
    with pytest.raises(totp.ReplayedCodeError):
        totp.verify(secret=secret, code=code(secret, -30), now=NOW, last_used_step=current)
    assert totp.verify(secret=secret, code=code(secret, 30), now=NOW, last_used_step=current)


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", None])
def test_malformed_codes(bad):
    with pytest.raises(totp.InvalidCodeError):
        totp.verify(secret=totp.generate_secret(), code=bad, now=NOW, last_used_step=None)


def test_provisioning_uri_names_the_issuer():
    uri = totp.provisioning_uri(
        secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", account_name="a@b.fr", issuer_name="IdP"
    )
    assert uri.startswith("otpauth://totp/IdP:a%40b.fr?") and "issuer=IdP" in uri
