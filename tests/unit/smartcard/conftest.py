"""Fixtures for the agent: one SoftHSM2 per session, one fresh card per test module."""

from __future__ import annotations

import pytest

from idp.clock import FrozenClock
from tests.support import pki
from tests.support.softhsm import ProvisionedCard, SoftHsm, provision_card, softhsm_or_skip


@pytest.fixture(scope="session")
def softhsm() -> SoftHsm:
    """SoftHSM2 loaded once per process; in CI a missing softhsm2 fails instead of skipping."""
    return softhsm_or_skip()


@pytest.fixture(scope="session")
def card_pki() -> pki.Pki:
    return pki.make_pki(test=True)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(pki.NOW)


@pytest.fixture(scope="module")
def rpps() -> str:
    return pki.make_rpps()


@pytest.fixture(scope="module")
def card(softhsm: SoftHsm, card_pki: pki.Pki, rpps: str) -> ProvisionedCard:
    """A freshly-labelled token for this module: auth and signature key pairs, random PIN."""
    return provision_card(
        softhsm=softhsm,
        issuer=card_pki.intermediate,
        id_nat="8" + rpps,
        surname="MARTIN",
        given_name="JEANNE",
        with_signature_certificate=True,
    )
