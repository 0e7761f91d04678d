"""'Forgot your password?': an emailed link plus one of the practitioner's factors sets a new
password; the link alone changes nothing, works once, for one hour, and asking for it says
nothing about which accounts exist."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from idp.accounts import password_reset
from idp.db import dispose as dispose_app
from idp.db import get_db
from idp.models import AuditEvent, PasswordReset, Practitioner, PractitionerStatus
from idp.services import cipher, methods, settings, throttle
from tests.functional.test_practitioner_unlock import forget_counters
from tests.support import factories
from tests.support.idp_server import LiveServer, build_app
from tests.support.oidc import UserAgent, totp_now
from tests.support.redis import redis_client_or_fail, redis_url

NEW_PASSWORD = "cheval agrafe batterie"
SENT = "If an account matches, we sent a link to its email address; it works for one hour."
INVALID = "This password reset link is invalid, has expired or was already used."


def someone(app, clock, **kwargs):
    """An active practitioner with a password and an authenticator app: (rpps, email, seed)."""
    with app.app_context():
        db = get_db()
        practitioner = factories.practitioner(db, clock, **kwargs)
        _device, secret = factories.totp_device(db, clock, practitioner, cipher=cipher())
        db.commit()
        return practitioner.rpps, practitioner.email, secret


def request_link(app, clock, identifier: str, ip: str = "198.51.100.7") -> str | None:
    """What POST /login/forgot does, returning the token the email would carry."""
    with app.app_context():
        db = get_db()
        token = password_reset.request_reset(
            db,
            identifier,
            ip=ip,
            throttle=throttle(),
            methods=methods(),
            now=clock.now(),
            issuer=settings().issuer,
        )
        db.commit()
        return token


def resets(app) -> list[PasswordReset]:
    with app.app_context():
        db = get_db()
        found = list(db.execute(select(PasswordReset).order_by(PasswordReset.id)).scalars())
        db.expunge_all()
        return found


def events(app, name: str) -> int:
    with app.app_context():
        return (
            get_db()
            .execute(select(func.count()).select_from(AuditEvent).where(AuditEvent.event == name))
            .scalar_one()
        )


def open_and_prove(agent, token, secret, clock):
    """Open the link, then answer the authenticator app: the new-password page."""
    page = agent.get(f"/password/reset/{token}")
    assert page.url.endswith("/login/totp"), page.url
    return agent.submit_totp(totp_now(secret, clock), page)


def choose(agent, page, password=NEW_PASSWORD):
    return agent.post("/password/new", {"password": password, "confirm": password}, page.text)


def password_step(agent, identifier, password):
    return agent.login_password(identifier, password)


def test_the_link_alone_changes_nothing(live_server, clock):
    app = live_server.app
    rpps, _email, _secret = someone(app, clock)
    token = request_link(app, clock, rpps)
    agent = UserAgent(live_server.url, language="en")
    page = agent.get(f"/password/reset/{token}")
    assert page.url.endswith("/login/totp")  # the token is gone from the address at once
    assert token not in page.text
    refused = agent.post(
        "/password/new", {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, page.text
    )
    assert refused.status_code == 403
    assert "Confirm that it is you with one of your sign-in methods first." in refused.text
    assert agent.get("/password/new").status_code == 403
    assert resets(app)[0].used_at is None
    other = UserAgent(live_server.url, language="en")
    assert password_step(other, rpps, factories.PASSWORD).url.endswith("/login/totp")
    assert password_step(other, rpps, NEW_PASSWORD).status_code == 401


def test_link_and_an_authenticator_code_set_a_new_password(live_server, clock):
    app = live_server.app
    rpps, email, secret = someone(app, clock)
    token = request_link(app, clock, email)
    agent = UserAgent(live_server.url, language="en")
    page = open_and_prove(agent, token, secret, clock)
    assert page.url.endswith("/password/new") and "Choose a new password" in page.text
    assert agent.get("/account").url.endswith("/login")  # the login did not complete
    page = agent.get("/password/new")
    weak = choose(agent, page, password=f"mine-{rpps}")  # the usual password rules
    assert weak.status_code == 400 and 'aria-invalid="true"' in weak.text
    done = choose(agent, weak)
    assert done.url.endswith("/password/changed") and "Sign in with your new password" in (
        done.text
    )
    assert resets(app)[0].used_at is not None
    assert events(app, "account:password:reset") == 1
    assert events(app, "account:password:reset_requested") == 1
    other = UserAgent(live_server.url, language="en")
    assert password_step(other, rpps, factories.PASSWORD).status_code == 401
    assert password_step(other, rpps, NEW_PASSWORD).url.endswith("/login/totp")


def test_an_expired_link_is_refused(live_server, clock):
    app = live_server.app
    rpps, _email, _secret = someone(app, clock)
    token = request_link(app, clock, rpps)
    clock.advance(3599)  # one second before the hour: the link still opens
    opened = UserAgent(live_server.url, language="en").get(f"/password/reset/{token}")
    assert opened.status_code == 200 and INVALID not in opened.text
    clock.advance(1)  # the hour: it does not
    agent = UserAgent(live_server.url, language="en")
    page = agent.get(f"/password/reset/{token}")
    assert page.status_code == 404 and INVALID in page.text
    assert 'href="/login/forgot"' in page.text


def test_a_used_link_is_refused(live_server, clock):
    app = live_server.app
    rpps, _email, secret = someone(app, clock)
    token = request_link(app, clock, rpps)
    agent = UserAgent(live_server.url, language="en")
    assert choose(agent, open_and_prove(agent, token, secret, clock)).url.endswith("/changed")
    again = UserAgent(live_server.url, language="en").get(f"/password/reset/{token}")
    assert again.status_code == 404 and INVALID in again.text
    unknown = UserAgent(live_server.url, language="en").get("/password/reset/not-a-token")
    assert unknown.status_code == 404 and INVALID in unknown.text


def test_two_concurrent_submissions_one_wins(live_server, clock):
    app = live_server.app
    rpps, _email, secret = someone(app, clock)
    token = request_link(app, clock, rpps)
    first, second = (
        UserAgent(live_server.url, language="en"),
        UserAgent(live_server.url, language="en"),
    )
    first_page = open_and_prove(first, token, secret, clock)
    clock.advance(30)  # a code is accepted once: the second browser uses the next one
    second_page = open_and_prove(second, token, secret, clock)
    assert first_page.url.endswith("/password/new") and second_page.url.endswith("/password/new")
    barrier = threading.Barrier(2)
    results = {}

    def submit(name, agent, page, password):
        barrier.wait()
        results[name] = choose(agent, page, password=password)

    threads = [
        threading.Thread(target=submit, args=("a", first, first_page, NEW_PASSWORD)),
        threading.Thread(target=submit, args=("b", second, second_page, "une autre phrase longue")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(response.status_code for response in results.values())
    assert statuses == [200, 410], statuses
    assert events(app, "account:password:reset") == 1
    winner = next(n for n, r in results.items() if r.status_code == 200)
    password = NEW_PASSWORD if winner == "a" else "une autre phrase longue"
    assert password_step(UserAgent(live_server.url, language="en"), rpps, password).url.endswith(
        "/login/totp"
    )


def test_every_answer_is_the_same_and_only_a_real_account_gets_a_link(live_server, clock):
    app = live_server.app
    rpps, _email, _secret = someone(app, clock)
    with app.app_context():
        db = get_db()
        disabled = factories.practitioner(db, clock, status=PractitionerStatus.DISABLED)
        factories.totp_device(db, clock, disabled, cipher=cipher())
        no_factor = factories.practitioner(db, clock)
        db.commit()
        others = [disabled.rpps, no_factor.rpps]
    agent = UserAgent(live_server.url, language="en")
    answers = []
    for identifier in [rpps, "19999999999", "nobody@example.test", *others]:
        page = agent.get("/login/forgot")
        answer = agent.post("/login/forgot", {"identifier": identifier}, page.text)
        answers.append((answer.status_code, SENT in answer.text, answer.url))
    assert len(set(answers)) == 1 and answers[0][:2] == (200, True)
    assert len(resets(app)) == 1  # only the active account with a factor
    assert events(app, "account:password:reset_requested") == 1


def test_a_new_request_ends_the_previous_link(live_server, clock):
    app = live_server.app
    rpps, _email, secret = someone(app, clock)
    earlier = request_link(app, clock, rpps)
    later = request_link(app, clock, rpps)
    agent = UserAgent(live_server.url, language="en")
    assert agent.get(f"/password/reset/{earlier}").status_code == 404
    assert choose(agent, open_and_prove(agent, later, secret, clock)).url.endswith("/changed")


def test_requests_are_throttled_per_account_silently_and_per_address(live_server, clock):
    app = live_server.app
    rpps, _email, _secret = someone(app, clock)
    tokens = [request_link(app, clock, rpps, ip=f"203.0.113.{n}") for n in range(6)]
    # Three free, a fourth after no wait, then the account waits: no link, no email.
    assert [t is not None for t in tokens] == [True] * 4 + [False] * 2
    assert len(resets(app)) == 4
    clock.advance(3600)  # an hour later the account may ask again
    assert request_link(app, clock, rpps, ip="203.0.113.9") is not None

    agent = UserAgent(live_server.url, language="en")
    statuses = []
    for n in range(22):
        page = agent.get("/login/forgot")
        statuses.append(
            agent.post("/login/forgot", {"identifier": f"x{n}@example.test"}, page.text)
        )
    assert [r.status_code for r in statuses[:21]] == [200] * 21
    assert statuses[21].status_code == 429 and statuses[21].headers["Retry-After"] == "1"


@pytest.fixture(params=["database", "redis"])
def server(request, database_url, tmp_path, clock):
    """A live server with its sessions and counters in the database, or in Redis."""
    overrides = {}
    if request.param == "redis":
        redis_client_or_fail().close()
        overrides["redis_url"] = redis_url()
    app = build_app(database_url, tmp_path, clock, **overrides)
    live = LiveServer(app)
    yield live
    live.stop()
    dispose_app(app)


def test_every_other_session_is_signed_out(server, clock):
    app = server.app
    rpps, _email, secret = someone(app, clock)
    with app.app_context():
        forget_counters(app, get_db().execute(select(Practitioner.id)).scalar_one())
    signed_in = UserAgent(server.url)
    page = password_step(signed_in, rpps, factories.PASSWORD)
    assert signed_in.submit_totp(totp_now(secret, clock), page).url.endswith("/account")
    clock.advance(30)
    token = request_link(app, clock, rpps)
    agent = UserAgent(server.url)
    assert choose(agent, open_and_prove(agent, token, secret, clock)).url.endswith("/changed")
    assert signed_in.get("/account").url.endswith("/login")
    assert agent.get("/account").url.endswith("/login")  # signs in again, with the new one


def test_a_suspended_account_gets_nothing_from_an_opened_link(live_server, clock):
    app = live_server.app
    rpps, _email, secret = someone(app, clock)
    token = request_link(app, clock, rpps)
    with app.app_context():
        db = get_db()
        practitioner = db.execute(
            select(Practitioner).where(Practitioner.rpps == rpps)
        ).scalar_one()
        practitioner.status = PractitionerStatus.DISABLED
        db.commit()
    page = UserAgent(live_server.url, language="en").get(f"/password/reset/{token}")
    assert page.status_code == 404 and INVALID in page.text


def test_the_reset_is_honoured_only_in_its_own_login(live_server, clock):
    """Someone else's password in the same browser ends the reset: their factor proves
    nothing for it, and the new-password page stays closed."""
    app = live_server.app
    rpps, _email, _secret = someone(app, clock)
    other_rpps, _other_email, other_secret = someone(app, clock)
    token = request_link(app, clock, rpps)
    agent = UserAgent(live_server.url, language="en")
    assert agent.get(f"/password/reset/{token}").url.endswith("/login/totp")
    page = password_step(agent, other_rpps, factories.PASSWORD)
    assert agent.submit_totp(totp_now(other_secret, clock), page).url.endswith("/account")
    assert agent.get("/password/new").url.endswith("/login")  # no login in progress now
    assert resets(app)[0].used_at is None


def test_a_link_that_expires_after_the_factor_is_refused(live_server, clock):
    app = live_server.app
    rpps, _email, secret = someone(app, clock)
    token = request_link(app, clock, rpps)
    clock.advance(3300)  # 55 minutes: the link still opens
    agent = UserAgent(live_server.url, language="en")
    page = open_and_prove(agent, token, secret, clock)
    assert page.url.endswith("/password/new")
    clock.advance(360)  # the factor step is still fresh, the link is not
    refused = choose(agent, page)
    assert refused.status_code == 410 and INVALID in refused.text
    assert (
        password_step(UserAgent(live_server.url, language="en"), rpps, NEW_PASSWORD).status_code
        == 401
    )
