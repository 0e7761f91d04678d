"""TOTP (RFC 6238): SHA-1, 6 digits, 30-second steps, one step of drift either way.

Pure functions: no Flask, no database. The service stores the last accepted time step and
refuses any step not above it (replay), which is stricter than comparing code values.
STANDARDS C3: ASVS wants a 30 s lifetime, RFC 6238 allows a step of drift; we accept
[-1, +1] steps and make every step single-use.
"""

from __future__ import annotations

import base64
import datetime as dt
import os

import pyotp

TOTP_STEP = 30
TOTP_DIGITS = 6
SECRET_BYTES = 20  # 160 bits, RFC 4226's recommendation
DRIFT_STEPS = 1


class TotpError(Exception):
    pass


class InvalidCodeError(TotpError):
    """Wrong code."""


class ReplayedCodeError(TotpError):
    """This time step was already used."""


def generate_secret() -> str:
    return base64.b32encode(os.urandom(SECRET_BYTES)).decode()


def provisioning_uri(*, secret: str, account_name: str, issuer_name: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account_name, issuer_name=issuer_name)


def time_step(when: dt.datetime) -> int:
    return int(when.timestamp()) // TOTP_STEP


def code_at(*, secret: str, when: dt.datetime) -> str:
    return pyotp.TOTP(secret).at(when)


def verify(*, secret: str, code: str, now: dt.datetime, last_used_step: int | None) -> int:
    """Return the matched time step, or raise. Constant-time comparison per candidate."""
    code = (code or "").strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isdigit():
        raise InvalidCodeError()
    totp = pyotp.TOTP(secret)
    current = time_step(now)
    for offset in (0, -DRIFT_STEPS, DRIFT_STEPS):
        step = current + offset
        if pyotp.utils.strings_equal(totp.generate_otp(step), code):
            if last_used_step is not None and step <= last_used_step:
                raise ReplayedCodeError()
            return step
    # A code of a step further away is just wrong: telling it apart would tell an attacker
    # holding the password that the same guess will work when that step comes.
    raise InvalidCodeError()
