"""Card-login kit for journeys against the live IdP: trust, CRLs, accounts, the login page, the
agent (python-pkcs11 on a SoftHSM2 token, or the real bridge in a thread)."""

from __future__ import annotations

import datetime as dt
import html
import ipaddress
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select

from idp.db import get_db
from idp.factors.smartcard.forwarded import ForwardingConfig
from idp.factors.smartcard.trust import CardTrust
from idp.factors.smartcard.verify import CardPolicy
from idp.factors.totp import method as totp_method
from idp.models import AuditEvent, PractitionerStatus
from smartcard.bridge import BridgeConfig, make_bridge_server
from smartcard.protocol import signing_payload
from smartcard.token import sign_payload
from tests.support import pki
from tests.support.crl import CrlServer
from tests.support.softhsm import ProvisionedCard, SoftHsm

TEST_CARD_POLICY = CardPolicy(production=False)
LOCALHOST = (ipaddress.ip_network("127.0.0.1/32"),)
PASSWORD = "Correct-Horse-Battery-9"


def make_card_trust(
    card_pki: pki.Pki,
    *,
    policy: CardPolicy = TEST_CARD_POLICY,
    trusted_proxies=LOCALHOST,
    proxy_verifies: bool = True,
) -> CardTrust:
    return CardTrust(
        anchors=(card_pki.root.certificate,),
        intermediates=(card_pki.intermediate.certificate,),
        policy=policy,
        forwarding=ForwardingConfig(
            trusted_proxies=tuple(trusted_proxies), proxy_verifies=proxy_verifies
        ),
    )


def serve_fresh_crls(
    crl_server: CrlServer, card_pki: pki.Pki, *, now: dt.datetime, revoked: tuple[int, ...] = ()
) -> None:
    """Up-to-date CRLs for the card issuer (listing ``revoked``) and for the root."""
    last_update = now - dt.timedelta(hours=1)
    crl_server.serve(
        card_pki.crl_url(card_pki.intermediate),
        card_pki.crl(revoked_serials=revoked, last_update=last_update),
    )
    crl_server.serve(
        card_pki.crl_url(card_pki.root), pki.make_crl(issuer=card_pki.root, last_update=last_update)
    )


def add_practitioner(
    app, *, rpps: str, status: str = PractitionerStatus.ACTIVE, with_totp: bool = False
) -> dict:
    """A practitioner with a password (and a confirmed TOTP device when asked)."""
    from idp.accounts import service
    from idp.services import cipher

    with app.app_context():
        db = get_db()
        clock = app.extensions["idp.clock"]
        practitioner = service.create_practitioner(
            db,
            rpps=rpps,
            given_name="Jeanne",
            family_name="Martin",
            profession_code="10",
            email=f"jeanne.{rpps}@example.test",
            clock=clock,
            password=PASSWORD,
        )
        practitioner.status = status
        secret = None
        if with_totp:
            device, secret = totp_method.start_totp_enrolment(
                db, practitioner=practitioner, name="Phone", clock=clock, cipher=cipher()
            )
            device.confirmed_at = clock.now()
        token = None
        if status == PractitionerStatus.INVITED:
            token = service.create_invitation(db, practitioner=practitioner, clock=clock)
        db.commit()
        return {"id": practitioner.id, "rpps": rpps, "totp_secret": secret, "invitation": token}


def rows(app, statement) -> list:
    """Rows read in their own session, detached so they outlive it."""
    with app.app_context():
        db = get_db()
        found = list(db.execute(statement).scalars())
        db.expunge_all()
        return found


def events(app, name: str) -> list[AuditEvent]:
    return rows(app, select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id))


# --------------------------------------------------------------------------- the login page


@dataclass(frozen=True)
class CardPage:
    """What /login/card gives the agent: the signed request, the code, the form token."""

    html: str
    origin: str
    transaction: str
    challenge: str
    code: str
    bridge_url: str

    @classmethod
    def parse(cls, text: str) -> CardPage:
        def attribute(name: str) -> str:
            match = re.search(rf'{name}="([^"]*)"', text)
            assert match, f"no {name} on the card page"
            return html.unescape(match.group(1))

        code = re.search(r'<strong id="card-code">([^<]+)</strong>', text)
        assert code, "no code on the card page"
        return cls(
            html=text,
            origin=attribute("data-origin"),
            transaction=attribute("data-transaction"),
            challenge=attribute("data-challenge"),
            code=code.group(1),
            bridge_url=attribute("data-bridge-url"),
        )

    def payload(self, **overrides: str) -> bytes:
        fields = {
            "origin": self.origin,
            "transaction": self.transaction,
            "challenge": self.challenge,
        } | overrides
        return signing_payload(**fields)


def card_answer(
    softhsm: SoftHsm, card: ProvisionedCard, payload: bytes, *, pin: str | None = None, now=None
) -> dict:
    """What the agent answers: the token signs ``payload`` after C_Login with the PIN."""
    kwargs = {"now": now} if now is not None else {}
    answer = sign_payload(
        lib=softhsm.lib, pin=pin or card.pin, payload=payload, token_label=card.label, **kwargs
    )
    return answer.to_json()


@contextmanager
def running_bridge(softhsm: SoftHsm, card: ProvisionedCard, *, origin: str) -> Iterator[str]:
    """The real agent bridge on 127.0.0.1 (a free port), serving one IdP origin."""
    config = BridgeConfig(origin=origin, lib=softhsm.lib, token_label=card.label)
    server = make_bridge_server(config=config, port=0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
