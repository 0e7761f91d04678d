"""The contract every authentication method keeps, run against each one through the orchestrator.

Like django-otp's shared device tests: one suite, one harness per method that knows how to
enrol it and how to produce a good, a wrong and a stale answer. A new method adds a harness here
and passes the same checks: no answer accepted twice, failures counted and throttled before
anything is verified, an expired challenge refused, success and failure audited exactly once,
the last factor never removable, ``revoke_all`` leaving nothing usable.

The whole module runs on an application with card trust (the ``app`` fixture below), so the card
method is in the registry for every harness. The CPS card is pure Python: certificates from the
module's test PKI with their RSA keys, answers signed exactly as the agent signs them; the
functional tests cover the real token.
"""

from __future__ import annotations

import datetime as dt
import functools
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import func, select

from idp.auth import assurance
from idp.auth.contract import Attempt, LastFactorError, MethodError
from idp.auth.devices import Client
from idp.auth.orchestrator import Orchestrator
from idp.db import dispose as dispose_app
from idp.factors.smartcard import login as card_logins
from idp.factors.smartcard.views import card_check
from idp.factors.totp import verify as totp
from idp.factors.webauthn import enrolment as keys
from idp.factors.webauthn import method as webauthn
from idp.models import AuditEvent
from idp.ratelimit import DatabaseThrottle, ThrottledError
from idp.services import cipher, methods, settings
from smartcard.protocol import MECHANISM_PKCS1, CardAnswer, origin_of, signing_payload
from tests.support import factories, pki
from tests.support.cardlogin import make_card_trust, serve_fresh_crls
from tests.support.idp_server import build_app
from tests.support.webauthn_crafting import DEFAULT_ORIGIN, SoftAuthenticator, b64url_decode

IP = "192.0.2.10"


@pytest.fixture
def app(database_url, tmp_path, clock, crl_server, card_pki):
    """Card trust on (the card method exists only then), with fresh CRLs for the card issuer."""
    serve_fresh_crls(crl_server, card_pki, now=clock.now())
    application = build_app(database_url, tmp_path, clock, smartcard=make_card_trust(card_pki))
    yield application
    dispose_app(application)


class Harness:
    kind: str
    fixtures: tuple[str, ...] = ()
    """Fixtures the harness is built with (by name)."""

    def owner(self, db, clock):
        """The practitioner whose factors the checks enrol."""
        return factories.practitioner(db, clock)


class TotpHarness(Harness):
    kind = "totp"

    def __init__(self) -> None:
        self.seeds: dict[int, str] = {}

    def attempt(self, clock, practitioner) -> Attempt:
        return Attempt(client=Client(ip=IP), now=clock.now(), practitioner_id=practitioner.id)

    def enrol(self, db, clock, practitioner) -> int:
        device, seed = factories.totp_device(db, clock, practitioner, cipher=cipher())
        db.commit()
        self.seeds[device.id] = seed
        return device.id

    def answer(self, db, clock, practitioner, enrolment_id) -> dict:
        return {"code": totp.code_at(secret=self.seeds[enrolment_id], when=clock.now())}

    def wrong(self, db, clock, practitioner, enrolment_id) -> dict:
        good = self.answer(db, clock, practitioner, enrolment_id)["code"]
        return {"code": "000000" if good != "000000" else "111111"}

    def stale(self, db, clock, practitioner, enrolment_id) -> dict:
        """A code of five minutes ago: its time step is over."""
        earlier = clock.now() - dt.timedelta(minutes=5)
        return {"code": totp.code_at(secret=self.seeds[enrolment_id], when=earlier)}


class WebAuthnHarness(Harness):
    kind = "webauthn"

    def __init__(self) -> None:
        self.rp = webauthn.RelyingParty(rp_id="localhost", name="IdP", origins=(DEFAULT_ORIGIN,))
        self.keys: dict[int, SoftAuthenticator] = {}

    def attempt(self, clock, practitioner) -> Attempt:
        return Attempt(
            client=Client(ip=IP),
            now=clock.now(),
            practitioner_id=practitioner.id,
            context={"rp": self.rp},
        )

    def enrol(self, db, clock, practitioner) -> int:
        options, challenge_id = keys.begin_registration(
            db, rp=self.rp, practitioner=practitioner, session_acr=assurance.HIGH, clock=clock
        )
        options = json.loads(options)
        authenticator = SoftAuthenticator(user_handle=b64url_decode(options["user"]["id"]))
        response = authenticator.registration_response(
            challenge=b64url_decode(options["challenge"])
        )
        row = keys.finish_registration(
            db,
            rp=self.rp,
            practitioner=practitioner,
            credential_json=json.dumps(response),
            challenge_id=challenge_id,
            name="Key",
            session_acr=assurance.HIGH,
            ip=IP,
            clock=clock,
        )
        db.commit()
        self.keys[row.id] = authenticator
        return row.id

    def _begin(self, db, clock, practitioner) -> dict:
        method = methods()[self.kind]
        return orchestrator(db, clock).begin(db, method, self.attempt(clock, practitioner))

    def answer(self, db, clock, practitioner, enrolment_id, **knobs) -> dict:
        started = self._begin(db, clock, practitioner)
        challenge = b64url_decode(json.loads(started["options"])["challenge"])
        response = self.keys[enrolment_id].authentication_response(challenge=challenge, **knobs)
        return {"credential": json.dumps(response), "challenge_id": started["challenge_id"]}

    def wrong(self, db, clock, practitioner, enrolment_id) -> dict:
        """Signed by a key that is not the registered one."""
        return self.answer(
            db, clock, practitioner, enrolment_id, signing_key=SoftAuthenticator().private_key
        )

    def stale(self, db, clock, practitioner, enrolment_id) -> dict:
        answer = self.answer(db, clock, practitioner, enrolment_id)
        clock.advance(301)  # challenges live 300 s
        return answer


@functools.cache
def stranger_key() -> rsa.RSAPrivateKey:
    """A key no certificate of the test PKI holds."""
    return pki.new_key()


class SmartcardHarness(Harness):
    """A CPS card: each enrolment is one certificate of the practitioner's RPPS (and its key),
    enrolled by its first login; an answer signs one fresh login transaction, as the local
    bridge answers the login page."""

    kind = "smartcard"
    fixtures = ("card_pki",)

    def __init__(self, card_pki: pki.Pki) -> None:
        self.pki = card_pki
        self.rpps = pki.make_rpps(prefix="997")
        self.cards: dict[int, pki.CardCertificate] = {}

    def owner(self, db, clock):
        return factories.practitioner(db, clock, rpps=self.rpps)

    def attempt(self, clock, practitioner) -> Attempt:
        """As the card's login page makes it: the card names its holder, so no practitioner."""
        trust = methods()[self.kind].trust
        return Attempt(
            client=Client(ip=IP),
            now=clock.now(),
            context={"clock": clock, "check": card_check(trust)},
        )

    def enrol(self, db, clock, practitioner) -> int:
        """A new certificate for the practitioner's RPPS, enrolled by its first login (verified
        by the method; the checks count only the logins they make themselves)."""
        card = self.pki.issue(id_nat="8" + practitioner.rpps, surname="MARTIN", given_name="JEANNE")
        verified = methods()[self.kind].finish(
            db, self.attempt(clock, practitioner), self._signed(db, clock, card)
        )
        db.commit()
        assert verified.practitioner_id == practitioner.id
        self.cards[verified.enrolment_id] = card
        return verified.enrolment_id

    def _signed(self, db, clock, card: pki.CardCertificate, *, key=None) -> dict:
        """A new login transaction, answered by ``card`` (its signature made with ``key``)."""
        started = card_logins.start_login(db, clock=clock)
        payload = signing_payload(
            origin=origin_of(settings().issuer),
            transaction=started.transaction,
            challenge=started.challenge,
        )
        signature = (key or card.key).sign(payload, padding.PKCS1v15(), hashes.SHA256())
        answer = CardAnswer(card.der, signature, MECHANISM_PKCS1)
        return {
            "via": card_logins.BRIDGE,
            "transaction": started.transaction,
            "answer": answer.to_json(),
        }

    def answer(self, db, clock, practitioner, enrolment_id) -> dict:
        return self._signed(db, clock, self.cards[enrolment_id])

    def wrong(self, db, clock, practitioner, enrolment_id) -> dict:
        """The enrolled certificate, but signed by a key that is not the card's."""
        return self._signed(db, clock, self.cards[enrolment_id], key=stranger_key())

    def stale(self, db, clock, practitioner, enrolment_id) -> dict:
        """A good answer to a transaction whose challenge has expired."""
        answer = self.answer(db, clock, practitioner, enrolment_id)
        clock.advance((card_logins.LOGIN_TTL + dt.timedelta(seconds=1)).total_seconds())
        return answer


class RecoveryHarness(Harness):
    """Recovery codes: each enrolment is one code of a set of ten (a new set replaces the old
    one); a limited method, never removable, and not a factor for "the last factor"."""

    kind = "recovery"
    revoked_by_two_enrolments = 10  # the second set replaced the first: ten unused codes left

    def __init__(self) -> None:
        self.codes: dict[int, str] = {}

    def attempt(self, clock, practitioner) -> Attempt:
        return Attempt(client=Client(ip=IP), now=clock.now(), practitioner_id=practitioner.id)

    def enrol(self, db, clock, practitioner) -> int:
        """A new set; the enrolment is its first code."""
        from idp.factors.recovery import verify as recovery

        plaintext = methods()[self.kind].issue(db, practitioner.id, now=clock.now(), reason="test")
        db.commit()
        rows = methods()[self.kind].enrolments(db, practitioner.id, now=clock.now())
        by_hash = {recovery.code_hash(code): code for code in plaintext}
        for row in rows:
            self.codes[row.id] = by_hash[row.record.code_hash]
        return rows[0].id

    def answer(self, db, clock, practitioner, enrolment_id) -> dict:
        return {"code": self.codes[enrolment_id]}

    def wrong(self, db, clock, practitioner, enrolment_id) -> dict:
        from idp.factors.recovery import verify as recovery

        return {"code": recovery.new_code()}

    def stale(self, db, clock, practitioner, enrolment_id) -> dict:
        """A code of a set that a new set replaced."""
        answer = self.answer(db, clock, practitioner, enrolment_id)
        self.enrol(db, clock, practitioner)
        return answer


HARNESSES = [TotpHarness, WebAuthnHarness, SmartcardHarness, RecoveryHarness]


def orchestrator(db, clock) -> Orchestrator:
    return Orchestrator(methods(), DatabaseThrottle(db.get_bind(), clock))


@pytest.fixture(params=HARNESSES, ids=lambda h: h.kind)
def harness(request):
    return request.param(*(request.getfixturevalue(name) for name in request.param.fixtures))


@pytest.fixture
def owner(db, clock, harness):
    practitioner = harness.owner(db, clock)
    db.commit()
    return practitioner


def authenticate(db, clock, harness, practitioner, answer):
    method = methods()[harness.kind]
    return orchestrator(db, clock).authenticate(
        db, method, harness.attempt(clock, practitioner), answer
    )


def events(db, name: str) -> int:
    return db.execute(select(func.count()).where(AuditEvent.event == name)).scalar()


def test_a_good_answer_is_accepted_once(db, clock, harness, owner):
    enrolment = harness.enrol(db, clock, owner)
    answer = harness.answer(db, clock, owner, enrolment)
    proven = authenticate(db, clock, harness, owner, answer)
    assert proven.practitioner_id == owner.id
    if methods()[harness.kind].limited:  # a level of its own, below every real one
        assert proven.limited and proven.acr == assurance.RECOVERY
        assert assurance.rank(proven.acr) < min(assurance.RANKS.values())
    else:
        assert not proven.limited and proven.acr in assurance.RANKS
    with pytest.raises(MethodError):
        authenticate(db, clock, harness, owner, answer)


def test_success_and_failure_are_each_audited_exactly_once(db, clock, harness, owner):
    enrolment = harness.enrol(db, clock, owner)
    authenticate(db, clock, harness, owner, harness.answer(db, clock, owner, enrolment))
    assert events(db, f"auth:{harness.kind}:succeeded") == 1
    assert events(db, f"auth:{harness.kind}:failed") == 0
    with pytest.raises(MethodError):
        authenticate(db, clock, harness, owner, harness.wrong(db, clock, owner, enrolment))
    assert events(db, f"auth:{harness.kind}:succeeded") == 1
    assert events(db, f"auth:{harness.kind}:failed") == 1


def test_an_expired_challenge_or_code_is_refused(db, clock, harness, owner):
    enrolment = harness.enrol(db, clock, owner)
    with pytest.raises(MethodError):
        authenticate(db, clock, harness, owner, harness.stale(db, clock, owner, enrolment))


def test_failures_are_counted_and_throttle_before_anything_is_verified(db, clock, harness, owner):
    enrolment = harness.enrol(db, clock, owner)
    refused = 0
    with pytest.raises(ThrottledError):
        for _ in range(60):
            with pytest.raises(MethodError):
                authenticate(db, clock, harness, owner, harness.wrong(db, clock, owner, enrolment))
            refused += 1
    assert 1 <= refused <= 51
    with pytest.raises(ThrottledError):  # even a good answer, before it is checked
        authenticate(db, clock, harness, owner, harness.answer(db, clock, owner, enrolment))


def test_the_last_factor_is_never_removable(db, clock, harness, owner):
    first = harness.enrol(db, clock, owner)
    method = methods()[harness.kind]
    if method.limited:  # not a factor: never counted, never removed (a new set replaces it)
        assert methods().usable_count(db, owner.id, now=clock.now()) == 0
        with pytest.raises(MethodError):
            orchestrator(db, clock).remove(db, method, owner.id, first, now=clock.now())
        assert first in [e.id for e in method.enrolments(db, owner.id, now=clock.now())]
        return
    with pytest.raises(LastFactorError):
        orchestrator(db, clock).remove(db, method, owner.id, first, now=clock.now())
    second = harness.enrol(db, clock, owner)
    orchestrator(db, clock).remove(db, method, owner.id, first, now=clock.now())
    with pytest.raises(LastFactorError):
        orchestrator(db, clock).remove(db, method, owner.id, second, now=clock.now())
    assert [e.id for e in method.enrolments(db, owner.id, now=clock.now())] == [second]


def test_revoke_all_leaves_nothing_usable(db, clock, harness, owner):
    enrolment = harness.enrol(db, clock, owner)
    harness.enrol(db, clock, owner)
    revoked = orchestrator(db, clock).revoke_all(db, owner.id, now=clock.now(), reason="lost")
    assert revoked == getattr(harness, "revoked_by_two_enrolments", 2)
    assert methods().usable_count(db, owner.id, now=clock.now()) == 0
    assert methods()[harness.kind].enrolments(db, owner.id, now=clock.now()) == []
    assert events(db, "account:two_factor:all_revoked") == 1
    with pytest.raises(MethodError):
        answer = harness.answer(db, clock, owner, enrolment)
        authenticate(db, clock, harness, owner, answer)


def test_the_card_answers_are_refused_for_the_reason_each_check_means(db, clock, card_pki):
    """The card harness's bad answers differ from a good one by exactly their defect."""
    harness = SmartcardHarness(card_pki)
    owner = harness.owner(db, clock)
    db.commit()
    enrolment = harness.enrol(db, clock, owner)
    good = harness.answer(db, clock, owner, enrolment)
    authenticate(db, clock, harness, owner, good)
    bad = [  # in this order: the stale answer moves the clock on
        ("transaction_used", lambda: good),
        ("bad_signature", lambda: harness.wrong(db, clock, owner, enrolment)),
        ("transaction_invalid", lambda: harness.stale(db, clock, owner, enrolment)),
    ]
    for reason, answer in bad:
        with pytest.raises(MethodError) as refused:
            authenticate(db, clock, harness, owner, answer())
        assert refused.value.code == reason


def test_every_installed_method_implements_the_whole_contract(app):
    """Each method of this deployment has every member of the contract, and a harness here."""
    from idp.auth.contract import AuthMethod, LimitedMethod

    with app.app_context():
        installed = list(methods())
    assert {m.kind for m in installed} == {h.kind for h in HARNESSES}
    for method in installed:
        assert isinstance(method, AuthMethod), method.kind
        assert method.limiter and method.enrolment_field and method.login_endpoint
        assert method.limited is (method.kind == "recovery"), method.kind
        if method.limited:
            assert isinstance(method, LimitedMethod), method.kind
            assert method.invitation_endpoint is None and method.add_endpoint is None
