"""Recovery of an account whose practitioner lost every factor: the request, four eyes, the
cooling-off delay, cancelling, the one-time link and the fresh enrolment it leads into."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading

import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from idp.accounts import recovery
from idp.cli import main as cli
from idp.crypto import hash_token
from idp.db import get_db
from idp.models import (
    AuditEvent,
    Practitioner,
    RecoveryRequest,
    Token,
    TotpDevice,
    WebSession,
)
from idp.services import cipher, methods, settings
from tests.support import factories
from tests.support.oidc import UserAgent, totp_now

EMAIL = "noor.haddad@example.fr"
REFERENCE_RE = re.compile(r'data-reference="([A-Z0-9]{4}-[A-Z0-9]{4})"')


@pytest.fixture
def account(live_server, clock):
    """An active practitioner with an authenticator app: (rpps, email, seed, id)."""
    with live_server.app.app_context():
        db = get_db()
        owner = factories.practitioner(db, clock, email=EMAIL, given_name="Noor")
        _device, secret = factories.totp_device(db, clock, owner, cipher=cipher())
        db.commit()
        return owner.rpps, owner.email, secret, owner.id


def file_request(live_server, rpps: str, email: str, message: str = "") -> str:
    agent = UserAgent(live_server.url, language="en")
    page = agent.get("/login/recovery-request")
    assert page.status_code == 200 and 'name="rpps"' in page.text
    filed = agent.post(
        "/login/recovery-request", {"rpps": rpps, "email": email, "message": message}, page.text
    )
    assert filed.status_code == 200
    assert "Your request is registered under reference" in filed.text
    assert "an operator will contact you to verify your identity" in filed.text
    return REFERENCE_RE.search(filed.text).group(1)


def rules(app, **overrides) -> recovery.Rules:
    with app.app_context():
        base = recovery.Rules.of(settings())
    return recovery.Rules(**{**base.__dict__, **overrides})


def approve(app, reference: str, operator: str, clock, **overrides) -> recovery.Approval:
    with app.app_context():
        return recovery.approve(
            get_db(), reference, operator=operator, rules=rules(app, **overrides), now=clock.now()
        )


def approved_link(live_server, reference: str, clock) -> str:
    assert not approve(live_server.app, reference, "alice", clock).approved
    given = approve(live_server.app, reference, "bob", clock)
    assert given.approved and given.link.startswith(f"{live_server.url}/recover/")
    return given.link.removeprefix(live_server.url)


def stored(app, reference: str) -> RecoveryRequest:
    with app.app_context():
        found = recovery.find_request(get_db(), reference)
        get_db().expunge(found)  # read after the request's session is gone
        return found


def events(app, practitioner_id: int) -> list[str]:
    with app.app_context():
        return list(
            get_db()
            .execute(
                select(AuditEvent.event)
                .where(AuditEvent.practitioner_id == practitioner_id)
                .order_by(AuditEvent.id)
            )
            .scalars()
        )


def sign_in(live_server, rpps: str, secret: str, clock) -> UserAgent:
    agent = UserAgent(live_server.url, language="en")
    page = agent.login_password(rpps, factories.PASSWORD)
    landed = agent.submit_totp(totp_now(secret, clock), page)
    assert landed.status_code == 200 and landed.url.endswith("/account"), landed.text
    clock.advance(30)  # the next code is a new time step
    return agent


def count_requests(app) -> int:
    with app.app_context():
        return get_db().execute(select(func.count()).select_from(RecoveryRequest)).scalar()


# --------------------------------------------------------------------------- filing


def test_help_page_leads_to_the_request_form(live_server):
    help_page = UserAgent(live_server.url, language="en").get("/login/help")
    assert 'href="/login/recovery-request"' in help_page.text


def test_filing_gives_the_same_answer_whatever_matches(live_server, account):
    rpps, email, _secret, owner_id = account
    unknown = file_request(live_server, "10000000017", email)
    wrong_email = file_request(live_server, rpps, "someone.else@example.fr")
    assert count_requests(live_server.app) == 0  # nothing created for either
    assert file_request(live_server, "10000000017", email) == unknown  # as a real one filed twice
    real = file_request(live_server, rpps, email.upper(), "Phone stolen at the hospital")
    assert real not in (unknown, wrong_email)
    request = stored(live_server.app, real)
    assert request.status == "pending" and request.practitioner_id == owner_id
    assert request.message == "Phone stolen at the hospital"
    assert events(live_server.app, owner_id)[-1] == "account:recovery:requested"


def test_one_open_request_per_practitioner(live_server, account):
    rpps, email, _secret, _id = account
    first = file_request(live_server, rpps, email)
    assert file_request(live_server, rpps, email) == first
    assert count_requests(live_server.app) == 1


def test_bad_form_is_a_field_error(live_server):
    agent = UserAgent(live_server.url, language="en")
    page = agent.get("/login/recovery-request")
    refused = agent.post("/login/recovery-request", {"rpps": "123", "email": "nope"}, page.text)
    assert refused.status_code == 400 and "An RPPS number has 11 digits." in refused.text


def test_filings_are_throttled_per_address(live_server, account):
    agent = UserAgent(live_server.url, language="en")
    page = agent.get("/login/recovery-request")
    answers = [
        agent.post(
            "/login/recovery-request",
            {"rpps": "10000000017", "email": f"x{n}@example.fr"},
            page.text,
        ).status_code
        for n in range(12)
    ]
    assert answers[:10] == [200] * 10 and answers[-1] == 429


# --------------------------------------------------------------------------- approvals


def test_four_eyes(live_server, account, clock):
    rpps, email, _secret, owner_id = account
    reference = file_request(live_server, rpps, email)
    first = approve(live_server.app, reference, "alice", clock)
    assert (first.given, first.needed, first.approved, first.link) == (1, 2, False, None)
    with pytest.raises(recovery.ApprovalRefusedError, match="alice already approved"):
        approve(live_server.app, reference, "alice", clock)
    for requester in (rpps, email, email.upper()):
        with pytest.raises(recovery.ApprovalRefusedError, match="who asked"):
            approve(live_server.app, reference, requester, clock)
    assert stored(live_server.app, reference).status == "pending"
    second = approve(live_server.app, reference, "bob", clock)
    assert second.approved and second.given == 2
    request = stored(live_server.app, reference)
    assert request.status == "approved" and request.decided_by == "bob"
    assert request.cooling_off_until == clock.now() + dt.timedelta(hours=24)
    token = second.link.rsplit("/", 1)[1]
    assert request.link_token_hash == hash_token(token)  # the token itself is stored nowhere
    with pytest.raises(recovery.RequestClosedError):
        approve(live_server.app, reference, "carol", clock)
    trail = events(live_server.app, owner_id)
    assert trail.count("account:recovery:approval_given") == 2
    assert trail[-1] == "account:recovery:approved"


def test_one_approval_when_the_deployment_asks_for_one(live_server, account, clock):
    rpps, email, _secret, _id = account
    reference = file_request(live_server, rpps, email)
    assert approve(live_server.app, reference, "alice", clock, approvals=1).approved


def test_deny_pending_and_during_the_delay(live_server, account, clock):
    rpps, email, _secret, owner_id = account
    reference = file_request(live_server, rpps, email)
    with live_server.app.app_context():
        recovery.deny(get_db(), reference, operator="carol", reason="no answer", now=clock.now())
    request = stored(live_server.app, reference)
    assert (request.status, request.decided_by, request.denied_reason) == (
        "denied",
        "carol",
        "no answer",
    )
    with pytest.raises(recovery.RequestClosedError):
        approve(live_server.app, reference, "alice", clock)
    # A new request, approved, then denied during its cooling-off: its link is dead.
    again = file_request(live_server, rpps, email)
    assert again != reference
    link = approved_link(live_server, again, clock)
    with live_server.app.app_context():
        recovery.deny(get_db(), again, operator="carol", reason="it was not her", now=clock.now())
    clock.advance(hours=25)
    assert UserAgent(live_server.url, language="en").get(link).status_code == 404
    assert "account:recovery:denied" in events(live_server.app, owner_id)


# --------------------------------------------------------------------------- the delay


def test_link_works_only_after_the_cooling_off(live_server, account, clock):
    rpps, email, _secret, _id = account
    link = approved_link(live_server, file_request(live_server, rpps, email), clock)
    agent = UserAgent(live_server.url, language="en")
    waiting = agent.get(link)
    assert waiting.status_code == 200 and waiting.url.endswith("/recover")  # token left behind
    assert "this link works only from" in waiting.text and 'id="start-recovery"' not in waiting.text
    early = agent.post("/recover", {}, agent.get("/login/recovery-request").text)
    assert early.status_code == 400 and "this link works only from" in early.text
    with live_server.app.app_context():
        assert get_db().get(Practitioner, _id).status == "active"
    clock.advance(hours=23, minutes=59, seconds=59)  # one second before the delay ends
    still = UserAgent(live_server.url, language="en").get(link)
    assert still.status_code == 200 and 'id="start-recovery"' not in still.text
    clock.advance(1)  # exactly 24 hours after the approval
    ready = UserAgent(live_server.url, language="en")
    page = ready.get(link)
    assert page.status_code == 200 and 'id="start-recovery"' in page.text
    enrol = ready.post("/recover", {}, page.text)
    assert enrol.status_code == 200 and enrol.url.endswith("/enrol")
    assert 'autocomplete="new-password"' in enrol.text


def test_cancel_from_a_session_with_a_remaining_factor(live_server, account, clock):
    rpps, email, secret, owner_id = account
    reference = file_request(live_server, rpps, email)
    link = approved_link(live_server, reference, clock)
    agent = sign_in(live_server, rpps, secret, clock)
    home = agent.get("/account")
    assert 'id="recovery-banner"' in home.text and reference in home.text
    assert "A recovery of your account was requested on" in home.text
    cancelled = agent.post(
        "/account/recovery/cancel",
        {"reference": re.search(r'name="reference" type="hidden" value="([^"]+)"', home.text)[1]},
        home.text,
    )
    assert cancelled.status_code == 200 and "Recovery cancelled" in cancelled.text
    assert stored(live_server.app, reference).status == "cancelled"
    assert 'id="recovery-banner"' not in agent.get("/account").text
    clock.advance(hours=25)
    assert UserAgent(live_server.url, language="en").get(link).status_code == 404
    assert "account:recovery:cancelled" in events(live_server.app, owner_id)


def test_someone_else_cannot_cancel_the_request(live_server, account, clock):
    rpps, email, _secret, _id = account
    reference = file_request(live_server, rpps, email)
    with live_server.app.app_context():
        db = get_db()
        other = factories.practitioner(db, clock)
        db.commit()
        with pytest.raises(recovery.NoSuchRequestError):
            recovery.cancel(db, reference, practitioner_id=other.id, now=clock.now())
    assert stored(live_server.app, reference).status == "pending"


# --------------------------------------------------------------------------- completion


def test_completion_revokes_everything_and_leads_into_enrolment(live_server, account, clock):
    rpps, email, secret, owner_id = account
    old_session = sign_in(live_server, rpps, secret, clock)
    with live_server.app.app_context():
        db = get_db()
        now = clock.now()
        db.add(
            Token(
                access_token_hash=hash_token("an-access-token"),
                client_id="client",
                practitioner_id=owner_id,
                scope="openid",
                acr="substantial",
                amr="pwd otp mfa",
                auth_time=now,
                issued_at=now,
                expires_at=now + dt.timedelta(minutes=10),
            )
        )
        db.commit()
    link = approved_link(live_server, file_request(live_server, rpps, email), clock)
    clock.advance(hours=24, minutes=1)
    with live_server.app.app_context():
        assert (
            get_db()
            .execute(select(func.count()).where(WebSession.practitioner_id == owner_id))
            .scalar()
        )
    agent = UserAgent(live_server.url, language="en")
    page = agent.get(link)
    enrol = agent.post("/recover", {}, page.text)
    assert enrol.url.endswith("/enrol")
    with live_server.app.app_context():
        db = get_db()
        owner = db.get(Practitioner, owner_id)
        assert owner.status == "invited" and owner.password_hash is None
        assert not any(
            e.usable
            for es in methods().enrolments(db, owner_id, now=clock.now()).values()
            for e in es
        )
        assert (
            db.execute(select(func.count()).where(WebSession.practitioner_id == owner_id)).scalar()
            == 0
        )
        assert db.execute(select(Token.revoked_at)).scalar_one() == clock.now()
    trail = events(live_server.app, owner_id)
    assert {"account:two_factor:all_revoked", "account:recovery:completed"} <= set(trail)
    # The old session is over, the old password and code no longer sign in.
    assert old_session.get("/account").url.endswith("/login")
    assert (
        UserAgent(live_server.url, language="en")
        .login_password(rpps, factories.PASSWORD)
        .status_code
        >= 400
    )
    # The fresh enrolment: a password, a new authenticator app, new recovery codes, signed in.
    password = "a brand new long password"
    setup = agent.post("/enrol", {"password": password, "confirm": password}, enrol.text)
    new_secret = re.search(r'<code class="secret">([A-Z2-7 ]+)</code>', setup.text)[1]
    done = agent.post(
        "/enrol/totp", {"code": pyotp.TOTP(new_secret.replace(" ", "")).at(clock.now())}, setup.text
    )
    assert done.status_code == 200 and done.url.endswith("/account/recovery/codes/new")
    saved = agent.post("/account/recovery/codes/saved", {}, done.text)
    assert saved.status_code == 200 and saved.url.endswith("/account")
    with live_server.app.app_context():
        db = get_db()
        assert db.get(Practitioner, owner_id).status == "active"
        devices = db.execute(
            select(TotpDevice).where(TotpDevice.practitioner_id == owner_id).order_by(TotpDevice.id)
        )
        assert [d.removed_at is None for d in devices.scalars()] == [False, True]


def test_link_is_single_use(live_server, account, clock):
    rpps, email, _secret, _id = account
    link = approved_link(live_server, file_request(live_server, rpps, email), clock)
    clock.advance(hours=24)
    agent = UserAgent(live_server.url, language="en")
    page = agent.get(link)
    assert agent.post("/recover", {}, page.text).url.endswith("/enrol")
    assert UserAgent(live_server.url, language="en").get(link).status_code == 404
    with live_server.app.app_context():
        request = get_db().execute(select(RecoveryRequest)).scalar_one()
        with pytest.raises(recovery.LinkInvalidError):
            recovery.complete(
                get_db(),
                request.id,
                now=clock.now(),
                methods=methods(),
                sessions=live_server.app.session_interface.store,
            )


def test_two_concurrent_uses_exactly_one_wins(live_server, account, clock):
    rpps, email, _secret, _id = account
    link = approved_link(live_server, file_request(live_server, rpps, email), clock)
    clock.advance(hours=24)
    agents = [UserAgent(live_server.url, language="en") for _ in range(2)]
    pages = [agent.get(link) for agent in agents]
    barrier = threading.Barrier(2)
    results = [None, None]

    def run(index):
        barrier.wait()
        results[index] = agents[index].post("/recover", {}, pages[index].text)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes = sorted((r.status_code, r.url.endswith("/enrol")) for r in results)
    assert outcomes == [(200, True), (404, False)]
    with live_server.app.app_context():
        assert (
            get_db()
            .execute(select(func.count()).where(AuditEvent.event == "account:recovery:completed"))
            .scalar()
            == 1
        )


def test_email_alone_never_gives_the_account(live_server, account, clock):
    """Someone who knows the RPPS number and holds the mailbox files a request: without the
    operators' approvals and the delay there is no link, and the request just expires."""
    rpps, email, secret, owner_id = account
    reference = file_request(live_server, rpps, email)
    request = stored(live_server.app, reference)
    assert request.link_token_hash is None
    attacker = UserAgent(live_server.url, language="en")
    assert attacker.get("/recover").status_code == 404
    assert attacker.post("/recover", {}, attacker.get("/login").text).status_code == 404
    assert attacker.get(f"/recover/{reference}").status_code == 404
    clock.advance(days=31)
    with live_server.app.app_context():
        assert recovery.expire_stale(get_db(), now=clock.now()) == 1
    assert stored(live_server.app, reference).status == "expired"
    with pytest.raises(recovery.RequestClosedError):
        approve(live_server.app, reference, "alice", clock)
    with live_server.app.app_context():
        owner = get_db().get(Practitioner, owner_id)
        assert owner.status == "active" and owner.password_hash is not None
    sign_in(live_server, rpps, secret, clock)  # the practitioner's own factors still work


def test_approved_link_expires_a_week_after_the_delay(live_server, account, clock):
    rpps, email, _secret, _id = account
    reference = file_request(live_server, rpps, email)
    link = approved_link(live_server, reference, clock)
    clock.advance(hours=24, days=7)
    assert UserAgent(live_server.url, language="en").get(link).status_code == 404
    # and a new request can be filed
    assert file_request(live_server, rpps, email) != reference
    assert stored(live_server.app, reference).status == "expired"


# --------------------------------------------------------------------------- operators' commands


def run_cli(database_url, tmp_path, *args):
    env = {
        "IDP_DATABASE_URL": database_url,
        "IDP_ENV": "development",
        "IDP_INSTANCE_PATH": str(tmp_path / "cli"),
        "IDP_REDIS_URL": "",
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_operator_commands(live_server, account, clock, database_url, tmp_path):
    rpps, email, _secret, owner_id = account
    reference = file_request(live_server, rpps, email, "lost my card")
    listed = json.loads(run_cli(database_url, tmp_path, "recovery", "list", "--json").output)
    assert [(r["reference"], r["status"], r["rpps"]) for r in listed] == [
        (reference, "pending", rpps)
    ]
    first = run_cli(database_url, tmp_path, "recovery", "approve", reference, "--operator", "alice")
    assert first.exit_code == 0 and json.loads(first.output)["approvals"] == 1
    again = run_cli(database_url, tmp_path, "recovery", "approve", reference, "--operator", "alice")
    assert again.exit_code == 2 and "alice already approved" in again.output
    own = run_cli(database_url, tmp_path, "recovery", "approve", reference, "--operator", rpps)
    assert own.exit_code == 2 and "cannot approve their own request" in own.output
    second = run_cli(
        database_url, tmp_path, "recovery", "approve", reference.lower(), "--operator", "bob"
    )
    shown = json.loads(second.output)
    assert shown["status"] == "approved" and shown["cooling_off_until"]
    assert "recover/" not in second.output  # the link goes to the practitioner only
    details = json.loads(
        run_cli(database_url, tmp_path, "recovery", "show", reference, "--json").output
    )
    assert details["message"] == "lost my card"
    assert [a["operator"] for a in details["approvals"]] == ["alice", "bob"]
    assert [e["event"] for e in details["history"]] == [
        "account:recovery:requested",
        "account:recovery:approval_given",
        "account:recovery:approval_given",
        "account:recovery:approved",
    ]
    text = run_cli(database_url, tmp_path, "recovery", "show", reference).output
    assert "approval: alice" in text and f"reference: {reference}" in text
    no_reason = run_cli(database_url, tmp_path, "recovery", "deny", reference)
    assert no_reason.exit_code == 2
    denied = run_cli(
        database_url, tmp_path, "recovery", "deny", reference, "--reason", "x", "--operator", "eve"
    )
    assert json.loads(denied.output) == {"reference": reference, "status": "denied"}
    assert json.loads(run_cli(database_url, tmp_path, "recovery", "list", "--json").output) == []
    by_status = run_cli(database_url, tmp_path, "recovery", "list", "--status", "denied").output
    assert reference in by_status
    unknown = run_cli(database_url, tmp_path, "recovery", "show", "ZZZZ-ZZZZ")
    assert unknown.exit_code == 2
    with live_server.app.app_context():
        operators = [
            e.details.get("operator")
            for e in get_db()
            .execute(select(AuditEvent).where(AuditEvent.practitioner_id == owner_id))
            .scalars()
            if e.event.startswith("account:recovery:") and e.event != "account:recovery:requested"
        ]
    assert operators == ["alice", "bob", "bob", "eve"]
