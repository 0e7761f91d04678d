"""Recovery codes themselves: how they are made, shown, typed back and compared. Pure.

A code is 16 characters drawn uniformly from a 32-symbol alphabet without the letters people
confuse with digits (I, O) nor the digits 0 and 1: 80 bits of randomness, shown in four groups
of four (``K7QM-3XPA-W9RT-2HZC``). What the practitioner types back is normalised before it is
hashed: case, spaces and dashes do not matter.
"""

from __future__ import annotations

import math
import secrets

from idp.crypto import hash_token

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
LENGTH = 16
GROUP = 4
COUNT = 10
"""Codes in one set."""
ENTROPY_BITS = LENGTH * math.log2(len(ALPHABET))


class MalformedCodeError(ValueError):
    """Not a recovery code at all (wrong length or characters)."""


def new_code() -> str:
    """One new code, as stored and compared (no dashes)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def new_codes(count: int = COUNT) -> list[str]:
    """A set of distinct codes."""
    codes: list[str] = []
    while len(codes) < count:
        code = new_code()
        if code not in codes:
            codes.append(code)
    return codes


def display(code: str) -> str:
    """``K7QM-3XPA-W9RT-2HZC``: what the practitioner reads, prints and types."""
    code = normalise(code)
    return "-".join(code[i : i + GROUP] for i in range(0, len(code), GROUP))


def normalise(typed: str) -> str:
    """The code as typed, without case, spaces or dashes; MalformedCodeError if it cannot be
    one (too long, too short, a character outside the alphabet)."""
    if not isinstance(typed, str) or len(typed) > 64:
        raise MalformedCodeError()
    cleaned = "".join(ch for ch in typed.upper() if not ch.isspace() and ch not in "-_.")
    if len(cleaned) != LENGTH or any(ch not in ALPHABET for ch in cleaned):
        raise MalformedCodeError()
    return cleaned


def code_hash(code: str) -> str:
    """What the database keeps: the SHA-256 of the normalised code (``hash_token``). With 80
    random bits no salt or slow hash is needed, and the same code always finds its row."""
    return hash_token(normalise(code))


def as_text(codes: list[str], *, heading: str) -> str:
    """The downloadable file: a heading line, then one code a line."""
    return heading + "\n\n" + "\n".join(display(code) for code in codes) + "\n"
