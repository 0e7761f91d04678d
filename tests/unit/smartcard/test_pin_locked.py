"""PIN lock paths. SoftHSM2 never locks a PIN (it only sets USER_PIN_COUNT_LOW), so a thin
double wraps the real library at the PKCS#11 boundary: everything is SoftHSM2 except what
C_Login and C_GetTokenInfo answer."""

import pytest
from pkcs11 import TokenFlag
from pkcs11 import exceptions as p11

from smartcard import errors
from smartcard.protocol import signing_payload
from smartcard.token import open_card, sign_payload

pytestmark = pytest.mark.pkcs11

PAYLOAD = signing_payload(origin="https://idp.example", transaction="tx", challenge="c")


class CardDouble:
    """Wraps a real token; ``login_error`` is what C_Login raises, ``extra_flags`` are added."""

    def __init__(self, token, *, login_error=None, extra_flags=TokenFlag(0), slot=None):
        self._token = token
        self._login_error = login_error
        self._extra_flags = extra_flags
        self.slot = slot
        self.login_attempts = 0

    def __getattr__(self, name):
        return getattr(self._token, name)

    @property
    def flags(self):
        return self._token.flags | self._extra_flags

    def open(self, **kwargs):
        if kwargs.get("user_pin") is not None:
            self.login_attempts += 1
            if self._login_error is not None:
                raise self._login_error
        return self._token.open(**kwargs)


class SlotDouble:
    def __init__(self, slot, **card):
        self._slot = slot
        self._card = card
        self.token = None

    def __getattr__(self, name):
        return getattr(self._slot, name)

    def get_token(self):
        self.token = CardDouble(self._slot.get_token(), slot=self, **self._card)
        return self.token


class LibDouble:
    """Only the slot holding ``label`` is shown, through SlotDouble."""

    def __init__(self, lib, *, label, **card):
        self._lib = lib
        self._label = label
        self._card = card
        self.slots = []

    def get_slots(self, token_present=False):
        self.slots = [
            SlotDouble(slot, **self._card)
            for slot in self._lib.get_slots(token_present=True)
            if slot.get_token().label == self._label
        ]
        return self.slots


def test_locked_pin_reported_by_c_login(softhsm, card, clock):
    lib = LibDouble(softhsm.lib, label=card.label, login_error=p11.PinLocked())

    with pytest.raises(errors.PinLockedError) as caught:
        sign_payload(lib=lib, pin=card.pin, payload=PAYLOAD, now=clock.now)

    assert "bloqué" in str(caught.value) and "locked" in str(caught.value)


def test_locked_flag_stops_before_spending_a_try(softhsm, card):
    lib = LibDouble(softhsm.lib, label=card.label, extra_flags=TokenFlag.USER_PIN_LOCKED)

    with pytest.raises(errors.PinLockedError):
        with open_card(lib=lib, pin=card.pin):
            pass

    assert lib.slots[0].token.login_attempts == 0


def test_wrong_pin_on_the_final_try_says_so(softhsm, card):
    lib = LibDouble(
        softhsm.lib,
        label=card.label,
        login_error=p11.PinIncorrect(),
        extra_flags=TokenFlag.USER_PIN_FINAL_TRY,
    )

    with pytest.raises(errors.PinIncorrectError) as caught:
        with open_card(lib=lib, pin=card.pin):
            pass

    assert caught.value.final_try
    assert "dernier essai" in str(caught.value)
