"""Test factories: practitioners, invitations, clients and factors, made through the product's
own services (so a test's setup obeys the same rules as production), one place for each."""

from __future__ import annotations

import itertools
import random

from idp.accounts import service as accounts
from idp.factors.totp import method as totp_method
from idp.models import Practitioner, PractitionerStatus, TotpDevice
from idp.oauth.clients import register_client
from tests.support.pki import make_rpps

PASSWORD = "A-long-enough-password"
_serial = itertools.count(1)


def practitioner(
    db,
    clock,
    *,
    rpps: str | None = None,
    status: str = PractitionerStatus.ACTIVE,
    password: str | None = PASSWORD,
    email: str | None = None,
    given_name: str = "Camille",
    family_name: str = "Martin",
    profession_code: str = "10",
) -> Practitioner:
    """A practitioner (active, with a password, unless told otherwise); flushed, not committed."""
    rpps = rpps or make_rpps(rng=random.Random())
    created = accounts.create_practitioner(
        db,
        rpps=rpps,
        given_name=given_name,
        family_name=family_name,
        profession_code=profession_code,
        email=email or f"{given_name.lower()}.{rpps}.{next(_serial)}@example.test",
        clock=clock,
        password=password,
    )
    created.status = status
    return created


def invited(db, clock, **kwargs) -> tuple[Practitioner, str]:
    """An invited practitioner without a password, and their invitation token."""
    invitee = practitioner(db, clock, status=PractitionerStatus.INVITED, password=None, **kwargs)
    return invitee, accounts.create_invitation(db, practitioner=invitee, clock=clock)


def totp_device(db, clock, owner: Practitioner, *, cipher, name: str = "Phone"):
    """A confirmed authenticator app; returns the device and its seed."""
    device, secret = totp_method.start_totp_enrolment(
        db, practitioner=owner, name=name, clock=clock, cipher=cipher
    )
    device.confirmed_at = clock.now()
    return device, secret


def pending_totp_device(
    db, clock, owner: Practitioner, *, cipher, name: str = "App"
) -> tuple[TotpDevice, str]:
    """An authenticator app started but not confirmed; returns the device and its seed."""
    return totp_method.start_totp_enrolment(
        db, practitioner=owner, name=name, clock=clock, cipher=cipher
    )


def client(db, *, redirect_uris: list[str], name: str = "Application", **kwargs):
    """A registered OAuth client; returns it and its secret (None for a public one)."""
    return register_client(db, name=name, redirect_uris=redirect_uris, **kwargs)
