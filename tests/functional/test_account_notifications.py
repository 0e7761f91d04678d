"""The practitioner is told, by a real email (aiosmtpd), when a sign-in method is added or
removed and when wrong answers pile up on their account; every factor's change goes through
the orchestrator, so the message is written once for all of them."""

from __future__ import annotations

import pytest

from idp import mail
from idp.auth.orchestrator import orchestrator
from idp.db import dispose as dispose_app
from idp.db import get_db
from idp.services import cipher, methods
from tests.support import factories
from tests.support.oidc import UserAgent
from tests.support.smtp import app_mailing_to, text_of


@pytest.fixture
def app(database_url, tmp_path, clock, smtp_server):
    application = app_mailing_to(smtp_server, database_url, tmp_path, clock)
    yield application
    dispose_app(application)


def account(app, clock, *, devices: tuple[str, ...] = ("Phone",)):
    with app.app_context():
        db = get_db()
        owner = factories.practitioner(db, clock, email="lea.roux@example.test")
        owner.language = "en"
        found = [
            factories.totp_device(db, clock, owner, cipher=cipher(), name=n)[0] for n in devices
        ]
        db.commit()
        return owner.id, owner.rpps, [device.id for device in found]


def delivered(app, smtp_server, count: int) -> list:
    mail.deliver_app(app)
    return smtp_server.wait_for(count)


def test_removing_a_method_tells_its_owner_which_one(app, clock, smtp_server):
    owner_id, _rpps, (phone, _tablet) = account(app, clock, devices=("Phone", "Old tablet"))
    with app.app_context():
        orchestrator().remove(get_db(), methods()["totp"], owner_id, phone, now=clock.now())
    [message] = delivered(app, smtp_server, 1)
    assert message["To"] == "lea.roux@example.test"
    assert message["Subject"].startswith("A sign-in method was removed from your account")
    assert "Phone" in text_of(message) and "authenticator app" in text_of(message)


def test_the_last_method_refused_tells_nothing(app, clock, smtp_server):
    owner_id, _rpps, (phone,) = account(app, clock)
    with app.app_context(), pytest.raises(Exception, match="last_factor"):
        orchestrator().remove(get_db(), methods()["totp"], owner_id, phone, now=clock.now())
    assert mail.deliver_app(app).sent == 0


def test_the_fifth_wrong_password_in_a_row_tells_the_practitioner(live_server, clock, smtp_server):
    _owner_id, rpps, _devices = account(live_server.app, clock)
    agent = UserAgent(live_server.url, language="en")
    for _ in range(4):
        assert agent.login_password(rpps, "not the right password").status_code == 401
    assert mail.deliver_app(live_server.app).sent == 0  # four: nothing yet
    assert agent.login_password(rpps, "not the right password").status_code == 401
    [message] = delivered(live_server.app, smtp_server, 1)
    assert message["Subject"].startswith("Failed sign-in attempts on your account")
    assert "5 failed sign-in attempts were made on your account." in text_of(message)
    assert "not the right password" not in text_of(message)
    assert agent.login_password(rpps, "not the right password").status_code == 401
    assert mail.deliver_app(live_server.app).sent == 0  # the sixth: no second email
