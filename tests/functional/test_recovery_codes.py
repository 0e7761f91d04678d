"""Recovery codes: issued with the first factor and shown once, hashed at rest, single use,
throttled, and the limited login they open: it can only bind a new factor, never reaches an
application, and cannot confirm anything."""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote

import pyotp
import pytest
from sqlalchemy import select

from idp.auth.contract import Attempt, LastFactorError
from idp.auth.devices import Client
from idp.auth.orchestrator import orchestrator
from idp.auth.policy import LIMITED_SECONDS, RECENT_STRONG_SECONDS
from idp.crypto import hash_token
from idp.db import get_db
from idp.factors.recovery import verify as recovery
from idp.factors.recovery.method import InvalidRecoveryCodeError
from idp.models import (
    AuditEvent,
    AuthorizationCode,
    Practitioner,
    RecoveryCode,
    Token,
    TotpDevice,
)
from idp.ratelimit import ThrottledError
from idp.services import clock as app_clock
from idp.services import methods
from tests.support import factories
from tests.support.oidc import (
    RelyingParty,
    UserAgent,
    csrf_token,
    json_post,
    query_of,
    redeem_code,
    totp_now,
)

REDIRECT = "http://localhost:9999/callback"
CODE_ON_PAGE = re.compile(r"<li><code>([A-Z2-9-]{19})</code></li>")


def practitioner_id(app, rpps: str) -> int:
    with app.app_context():
        return get_db().execute(select(Practitioner.id).where(Practitioner.rpps == rpps)).scalar()


def issue(app, rpps: str) -> list[str]:
    with app.app_context():
        db = get_db()
        pid = db.execute(select(Practitioner.id).where(Practitioner.rpps == rpps)).scalar()
        codes = methods()["recovery"].issue(db, pid, now=app_clock().now(), reason="test")
        db.commit()
        return codes


def rows(app, pid: int) -> list[RecoveryCode]:
    with app.app_context():
        db = get_db()
        found = list(db.execute(select(RecoveryCode).where(RecoveryCode.practitioner_id == pid)))
        db.expunge_all()
        return [row for (row,) in found]


def events(app, name: str) -> list[AuditEvent]:
    with app.app_context():
        db = get_db()
        found = list(db.execute(select(AuditEvent).where(AuditEvent.event == name)).scalars())
        db.expunge_all()
        return found


def recovery_login(agent: UserAgent, username: str, password: str, code: str):
    agent.login_password(username, password)
    form = agent.get("/login/recovery")
    assert form.status_code == 200 and 'name="code"' in form.text, form.url
    return agent.post("/login/recovery", {"code": code}, form.text)


def limited_agent(live_server, demo) -> tuple[UserAgent, list[str]]:
    codes = issue(live_server.app, demo["username"])
    agent = UserAgent(live_server.url, language="en")
    landed = recovery_login(agent, demo["username"], demo["password"], codes[0])
    assert landed.status_code == 200 and landed.url.endswith("/account/recovery"), landed.url
    return agent, codes


def full_login(live_server, demo, clock) -> UserAgent:
    agent = UserAgent(live_server.url, language="en")
    page = agent.login_password(demo["username"], demo["password"])
    clock.advance(30)
    landed = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    assert landed.url.endswith("/account"), landed.url
    return agent


# --------------------------------------------------------------------------- issuing


def test_ten_codes_are_issued_with_the_first_factor_and_shown_once(live_server, clock):
    app = live_server.app
    with app.app_context():
        db = get_db()
        invitee, token = factories.invited(db, app_clock(), given_name="Léa")
        db.commit()
        pid = invitee.id
    agent = UserAgent(live_server.url, language="en")
    page = agent.get(f"/enrol/{token}")
    password = "un mot de passe assez long"
    setup = agent.post("/enrol", {"password": password, "confirm": password}, page.text)
    assert rows(app, pid) == []  # nothing before the first factor is bound
    secret = re.search(r'<code class="secret">([A-Z2-7 ]+)</code>', setup.text).group(1)
    code = pyotp.TOTP(secret.replace(" ", "")).at(clock.now())
    shown = agent.post("/enrol/totp", {"code": code}, setup.text)

    assert shown.status_code == 200 and shown.url.endswith("/account/recovery/codes/new")
    assert shown.headers["Cache-Control"] == "no-store"
    displayed = CODE_ON_PAGE.findall(shown.text)
    assert len(displayed) == 10 and len(set(displayed)) == 10
    stored = rows(app, pid)
    assert len(stored) == 10 and all(row.used_at is None for row in stored)
    # hashed at rest: the table holds the codes' hashes, never the codes
    assert {row.code_hash for row in stored} == {
        hash_token(recovery.normalise(c)) for c in displayed
    }
    for row in stored:
        assert not any(recovery.normalise(c) in row.code_hash for c in displayed)
    # Download (a data: URL, nothing to fetch again) and Print
    download = re.search(r'href="(data:text/plain[^"]+)" download="recovery-codes.txt"', shown.text)
    assert download and all(c in unquote(download.group(1)) for c in displayed)
    assert 'id="recovery-print"' in shown.text and "recovery-codes.js" in shown.text
    assert [e.details_json for e in events(app, "account:recovery:codes_generated")]

    again = agent.get("/account/recovery/codes/new")  # once only: the plaintext is gone
    assert again.url.endswith("/account") and not CODE_ON_PAGE.findall(again.text)
    done = agent.post("/account/recovery/codes/saved", {}, shown.text)
    assert done.url.endswith("/account") and 'id="recovery-count"' in done.text
    assert "10 recovery codes left" in done.text


def test_an_account_without_codes_is_offered_to_generate_them(live_server, demo, clock):
    agent = full_login(live_server, demo, clock)
    home = agent.get("/account?lang=en")
    assert 'id="recovery-none"' in home.text and 'action="/account/recovery/codes"' in home.text
    shown = agent.post("/account/recovery/codes", {}, home.text)
    assert shown.url.endswith("/account/recovery/codes/new")
    assert len(CODE_ON_PAGE.findall(shown.text)) == 10


# --------------------------------------------------------------------------- the code at sign-in


def test_the_second_step_offers_a_recovery_code_only_to_who_has_some(live_server, demo):
    agent = UserAgent(live_server.url, language="en")
    page = agent.login_password(demo["username"], demo["password"])
    assert 'id="use-recovery-code"' not in page.text
    assert 'id="method-recovery"' not in agent.get("/login/methods").text
    assert agent.get("/login/recovery").url.endswith("/login/totp")
    issue(live_server.app, demo["username"])
    page = agent.login_password(demo["username"], demo["password"])
    assert 'href="/login/recovery" id="use-recovery-code"' in page.text
    assert 'id="method-recovery"' in agent.get("/login/methods").text
    assert 'id="use-recovery-code"' in agent.get("/login/help").text


def test_a_code_opens_a_limited_login_once(live_server, demo):
    codes = issue(live_server.app, demo["username"])
    agent = UserAgent(live_server.url, language="en")
    typed = codes[3].lower()[:8] + " " + codes[3].lower()[8:]  # case and spaces do not matter
    landed = recovery_login(agent, demo["username"], demo["password"], typed)
    assert landed.url.endswith("/account/recovery")
    assert 'id="recovery-limited"' in landed.text and 'id="recovery-add-totp"' in landed.text
    assert "9 recovery codes left" in landed.text
    succeeded = events(live_server.app, "auth:recovery:succeeded")
    assert len(succeeded) == 1 and '"remaining": 9' in succeeded[0].details_json

    other = UserAgent(live_server.url, language="en")
    refused = recovery_login(other, demo["username"], demo["password"], codes[3])
    assert refused.status_code == 401 and "not valid or was already used" in refused.text
    assert codes[3] not in refused.text  # a refused code is not sent back into the form


def test_a_code_of_another_practitioner_is_refused(live_server, demo):
    with live_server.app.app_context():
        db = get_db()
        other = factories.practitioner(db, app_clock())
        db.commit()
        other_rpps = other.rpps
    theirs = issue(live_server.app, other_rpps)
    issue(live_server.app, demo["username"])
    agent = UserAgent(live_server.url, language="en")
    refused = recovery_login(agent, demo["username"], demo["password"], theirs[0])
    assert refused.status_code == 401
    assert all(
        row.used_at is None
        for row in rows(live_server.app, practitioner_id(live_server.app, other_rpps))
    )


def test_wrong_codes_are_throttled_and_then_even_a_good_one_waits(live_server, demo):
    app = live_server.app
    codes = issue(app, demo["username"])
    pid = practitioner_id(app, demo["username"])

    def attempt(code: str):
        with app.app_context():
            db = get_db()
            try:
                orchestrator().authenticate(
                    db,
                    methods()["recovery"],
                    Attempt(
                        client=Client(ip="192.0.2.7"), now=app_clock().now(), practitioner_id=pid
                    ),
                    {"code": code},
                )
                return "ok"
            except InvalidRecoveryCodeError:
                return "wrong"
            except ThrottledError:
                return "throttled"

    results = [attempt(recovery.new_code()) for _ in range(8)]
    assert results[:5] == ["wrong"] * 5 and "throttled" in results
    assert attempt(codes[0]) == "throttled"
    assert all(row.used_at is None for row in rows(app, pid))  # nothing verified meanwhile


def test_twenty_requests_with_the_same_code_at_once_succeed_exactly_once(live_server, demo):
    app = live_server.app
    codes = issue(app, demo["username"])
    pid = practitioner_id(app, demo["username"])
    barrier = threading.Barrier(20)
    results: list[str | None] = [None] * 20

    def run(index: int) -> None:
        with app.app_context():
            db = get_db()
            attempt = Attempt(
                # twenty browsers, each with its own device counter for the account
                client=Client(ip=f"192.0.2.{index + 1}", devices={pid: f"device-{index}"}),
                now=app_clock().now(),
                practitioner_id=pid,
                login=f"login-{index}",
            )
            barrier.wait()
            try:
                orchestrator().authenticate(db, methods()["recovery"], attempt, {"code": codes[0]})
                results[index] = "ok"
            except InvalidRecoveryCodeError:
                results[index] = "refused"
            except Exception as exc:  # reported, not swallowed
                results[index] = repr(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["ok"] + ["refused"] * 19, results
    assert len([row for row in rows(app, pid) if row.used_at is not None]) == 1


# --------------------------------------------------------------------------- the limited login


def test_a_limited_login_never_reaches_an_application(live_server, demo):
    agent, _codes = limited_agent(live_server, demo)
    rp = RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)
    asked = agent.get(rp.authorization_url())
    assert asked.url.split("?")[0].endswith("/login") and "code=" not in asked.url
    silent = agent.http.get(rp.authorization_url(prompt="none"), allow_redirects=False)
    assert query_of(silent.headers["Location"])["error"] == ["login_required"]
    assert "code" not in query_of(silent.headers["Location"])
    with live_server.app.app_context():
        assert get_db().execute(select(AuthorizationCode)).first() is None


def test_a_limited_login_is_not_asked_for_consent(live_server, demo):
    with live_server.app.app_context():
        db = get_db()
        client, secret = factories.client(db, redirect_uris=[REDIRECT], require_consent=True)
        db.commit()
        client_id = client.client_id
    agent, _codes = limited_agent(live_server, demo)
    rp = RelyingParty(live_server.url, client_id, secret, REDIRECT)
    asked = agent.get(rp.authorization_url())
    assert 'name="consent_decision"' not in asked.text and asked.url.split("?")[0].endswith(
        "/login"
    )
    approve = agent.http.post(
        rp.authorization_url(),
        data={"consent_decision": "approve", "csrf_token": csrf_token(asked.text)},
        allow_redirects=False,
    )
    assert approve.status_code in (302, 303) and "code=" not in approve.headers["Location"]
    with live_server.app.app_context():
        assert get_db().execute(select(AuthorizationCode)).first() is None
        assert (
            get_db()
            .execute(select(AuditEvent).where(AuditEvent.event == "oauth:consent:granted"))
            .first()
            is None
        )


@pytest.mark.parametrize(
    "path", ["/account", "/login/reauthenticate", "/account/recovery/codes/new?x=1"]
)
def test_a_limited_login_is_sent_to_its_landing_page(live_server, demo, path):
    agent, _codes = limited_agent(live_server, demo)
    landed = agent.get(path)
    assert landed.url.endswith("/account/recovery"), landed.url
    with live_server.app.app_context():
        device_id = get_db().execute(select(TotpDevice.id)).scalars().first()
    removed = agent.post(
        f"/account/totp/{device_id}/remove", {}, agent.get("/account/recovery").text
    )
    assert removed.url.endswith("/account/recovery")
    with live_server.app.app_context():
        assert get_db().get(TotpDevice, device_id).removed_at is None


def test_a_limited_login_can_add_an_authenticator_app_then_signs_out(live_server, demo, clock):
    agent, _codes = limited_agent(live_server, demo)
    landing = agent.get("/account/recovery")
    assert 'id="recovery-added"' not in landing.text  # the lost app is not "new"
    clock.advance(5)
    start = agent.get("/account/totp/add")
    assert start.status_code == 200 and 'id="totp-start"' in start.text
    setup = agent.post("/account/totp/add", {}, start.text)
    secret = re.search(r'<code class="secret">([A-Z2-7 ]+)</code>', setup.text).group(1)
    code = pyotp.TOTP(secret.replace(" ", "")).at(clock.now())
    done = agent.post("/account/totp/add", {"code": code}, setup.text)
    assert done.url.endswith("/account/recovery") and 'id="recovery-added"' in done.text
    assert len(events(live_server.app, "account:two_factor:method_added")) == 1
    # still limited: no application, no account page
    assert agent.get("/account").url.endswith("/account/recovery")
    out = agent.post("/logout", {}, done.text)
    assert out.status_code == 200
    assert agent.get("/account/recovery").url.split("?")[0].endswith("/login")


def test_a_limited_login_ends_after_its_time(live_server, demo, clock):
    agent, _codes = limited_agent(live_server, demo)
    clock.advance(LIMITED_SECONDS)  # 15 minutes: still open
    assert agent.get("/account/totp/add").url.endswith("/account/totp/add")
    clock.advance(1)
    assert agent.get("/account/totp/add").url.split("?")[0].endswith("/login")


def test_a_recovery_code_never_confirms_a_signed_in_practitioner(live_server, demo, clock):
    issue(live_server.app, demo["username"])
    agent = full_login(live_server, demo, clock)
    confirm = agent.get("/login/reauthenticate")
    assert 'id="use-recovery-code"' not in confirm.text
    assert not agent.get("/login/recovery").url.endswith("/login/recovery")
    assert 'id="method-recovery"' not in agent.get("/login/methods").text


# --------------------------------------------------------------------------- the account page


def test_regenerating_needs_a_recent_strong_login_and_ends_the_old_codes(live_server, demo, clock):
    app = live_server.app
    old = issue(app, demo["username"])
    agent = full_login(live_server, demo, clock)
    home = agent.get("/account?lang=en")
    assert "10 recovery codes left" in home.text
    section = home.text.split('id="recovery"')[1]
    assert "Remove" not in section and "Generate new codes" in section
    clock.advance(RECENT_STRONG_SECONDS + 1)
    stale = agent.post("/account/recovery/codes", {}, home.text)
    assert stale.url.endswith("/login/reauthenticate")
    clock.advance(30)
    confirmed = agent.submit_totp(totp_now(demo["totp_secret"], clock), stale)
    shown = agent.post("/account/recovery/codes", {}, confirmed.text)
    fresh = CODE_ON_PAGE.findall(shown.text)
    assert len(fresh) == 10 and not set(fresh) & {recovery.display(c) for c in old}
    generated = events(app, "account:recovery:codes_generated")
    assert '"replaced": 10' in generated[-1].details_json
    pid = practitioner_id(app, demo["username"])
    assert len([r for r in rows(app, pid) if r.used_at is None]) == 10
    other = UserAgent(live_server.url, language="en")
    assert recovery_login(other, demo["username"], demo["password"], old[0]).status_code == 401
    landed = recovery_login(
        UserAgent(live_server.url, language="en"), demo["username"], demo["password"], fresh[0]
    )
    assert landed.url.endswith("/account/recovery")


def test_the_last_factor_cannot_be_removed_while_recovery_codes_exist(live_server, demo, clock):
    app = live_server.app
    issue(app, demo["username"])
    agent = full_login(live_server, demo, clock)
    home = agent.get("/account?lang=en")
    assert "Your only sign-in method" in home.text
    with app.app_context():
        device_id = get_db().execute(select(TotpDevice.id)).scalars().first()
    refused = agent.post(f"/account/totp/{device_id}/remove", {}, home.text)
    assert refused.status_code == 409
    pid = practitioner_id(app, demo["username"])
    with app.app_context():
        db = get_db()
        assert methods().usable_count(db, pid, now=app_clock().now()) == 1
        with pytest.raises(LastFactorError):
            orchestrator().remove(db, methods()["totp"], pid, device_id, now=app_clock().now())


def test_no_token_is_issued_for_a_limited_login_even_with_a_code(live_server, demo, clock):
    """Belt and braces: had a code been minted for a limited login, the token endpoint
    would still refuse it."""
    import base64
    import hashlib
    import secrets

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    code = secrets.token_urlsafe(36)
    with live_server.app.app_context():
        db = get_db()
        pid = db.execute(select(Practitioner.id).where(Practitioner.rpps == demo["username"]))
        db.add(
            AuthorizationCode(
                code_hash=hash_token(code),
                client_id=demo["client_id"],
                practitioner_id=pid.scalar(),
                redirect_uri=REDIRECT,
                scope="openid",
                code_challenge=challenge.rstrip(b"=").decode(),
                code_challenge_method="S256",
                auth_time=app_clock().now(),
                acr="recovery",
                amr="pwd recovery",
                issued_at=app_clock().now(),
            )
        )
        db.commit()
    rp = RelyingParty(live_server.url, demo["client_id"], demo["client_secret"], REDIRECT)
    answer = redeem_code(
        rp.metadata["token_endpoint"],
        code,
        redirect_uri=REDIRECT,
        verifier=verifier,
        auth=(demo["client_id"], demo["client_secret"]),
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    with live_server.app.app_context():
        assert get_db().execute(select(Token)).first() is None


def test_a_limited_login_may_start_binding_a_security_key(live_server, demo):
    """NIST-10 asks a login at the account's level to bind a key; the person who lost their
    factors cannot give one: the recovery code stands for it (no confirmation is asked)."""
    agent, _codes = limited_agent(live_server, demo)
    page = agent.get("/account/webauthn/add")
    assert page.status_code == 200 and page.url.endswith("/account/webauthn/add"), page.url
    options = json_post(agent, "/account/webauthn/add/options", page.text, {"name": "Key"})
    assert options.status_code == 200 and "challenge" in options.json()
    renamed = json_post(agent, "/account/webauthn/1/rename", page.text, {"name": "x"})
    assert renamed.status_code == 401  # anything else: refused (JSON) or sent to the landing
