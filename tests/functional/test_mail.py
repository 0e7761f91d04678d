"""Email: queued with the change it tells about, written in the practitioner's language,
sealed at rest, delivered by a real SMTP server (aiosmtpd) once, retried while it is down."""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading

import pytest
from sqlalchemy import select

from idp import mail
from idp.accounts import service
from idp.config import MailSettings
from idp.db import dispose as dispose_app
from idp.db import get_db
from idp.mail import outbox
from idp.mail.render import LINK_EVENTS, SUBJECTS, render
from idp.models import OutboxMessage, Practitioner
from idp.notifications import EVENTS, notify
from tests.support import factories
from tests.support.idp_server import build_app
from tests.support.smtp import SmtpServer, app_mailing_to, free_port, html_of, text_of

URL = re.compile(r"https?://[^\s<>\"']+")


@pytest.fixture
def mail_app(database_url, tmp_path, clock, smtp_server):
    application = app_mailing_to(smtp_server, database_url, tmp_path, clock)
    yield application
    dispose_app(application)


def rows(app) -> list[OutboxMessage]:
    """The outbox as it is now (detached: the test reads it after the session ends)."""
    with app.app_context():
        db = get_db()
        found = list(db.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars())
        db.expunge_all()
        return found


def test_an_invitation_arrives_by_email_and_its_link_opens_the_enrolment(
    mail_app, clock, smtp_server
):
    with mail_app.app_context():
        db = get_db()
        invitee, token = factories.invited(db, clock, email="jeanne@example.test")
        db.commit()
    [queued] = rows(mail_app)
    assert queued.sent_at is None and queued.attempts == 0
    for body in (queued.text_body, queued.html_body):  # sealed: the link is not readable
        assert body.startswith("v1.") and token not in body

    report = mail.deliver_app(mail_app)

    assert (report.sent, report.retried) == (1, 0)
    [message] = smtp_server.wait_for(1)
    assert message["To"] == "jeanne@example.test"
    assert message["From"] == "idp@example.test"
    assert message.get_content_type() == "multipart/alternative"
    link = f"http://localhost:5000/enrol/{token}"
    assert link in text_of(message) and f'href="{link}"' in html_of(message)
    assert URL.findall(text_of(message)) == [link]

    client = mail_app.test_client()
    opened = client.get(link.removeprefix("http://localhost:5000"))
    assert opened.status_code == 303 and opened.headers["Location"].endswith("/enrol")
    page = client.get("/enrol", headers={"Accept-Language": "en"})
    assert page.status_code == 200 and "Welcome, Camille" in page.get_data(as_text=True)

    [sent] = rows(mail_app)  # kept as the record, without its bodies
    assert sent.sent_at == clock.now() and sent.text_body is None and sent.html_body is None
    assert sent.subject and sent.next_attempt_at is None
    assert mail.deliver_app(mail_app).sent == 0  # sent once


def test_import_and_resend_queue_an_invitation_with_each_new_link(mail_app, clock, smtp_server):
    csv = (
        "rpps,given_name,family_name,profession_code,email\n"
        "10000000017,Jules,Durand,10,jules@example.fr\n"
        "10000000025,Ana,Roux,21,ana@example.fr\n"
    )
    with mail_app.app_context():
        db = get_db()
        imported = service.import_practitioners(
            db, service.read_import(csv), clock=clock, dry_run=False
        )
        db.commit()
        again = service.resend_invitation(db, imported[1][0], clock=clock, operator="ops")
        db.commit()
    assert mail.deliver_app(mail_app).sent == 3
    received = {(m["To"], URL.findall(text_of(m))[0]) for m in smtp_server.wait_for(3)}
    assert received == {
        ("jules@example.fr", service_link(imported[0][1])),
        ("ana@example.fr", service_link(imported[1][1])),
        ("ana@example.fr", service_link(again)),
    }


def service_link(token: str) -> str:
    return f"http://localhost:5000/enrol/{token}"


SAMPLE = {
    "method": "webauthn",
    "name": "Clé du cabinet",
    "remaining": 3,
    "count": 4,
    "until": dt.datetime(2026, 1, 16, 17, 30, tzinfo=dt.UTC),
}
DATES = {"fr": "15 janvier 2026, 10:00", "en": "15 January 2026, 10:00"}


def test_every_event_has_a_subject():
    assert set(SUBJECTS) == EVENTS


@pytest.mark.parametrize("language", ["fr", "en"])
@pytest.mark.parametrize("event", sorted(EVENTS))
def test_every_event_has_a_message_in_both_languages(app, event, language):
    practitioner = Practitioner(given_name="Jeanne", family_name="Martin", language=language)
    context = dict(SAMPLE)
    if event in LINK_EVENTS:
        context["link"] = "http://localhost:5000/one-time/S3CR3T"
    now = dt.datetime(2026, 1, 15, 9, 0, tzinfo=dt.UTC)  # 10:00 in Paris
    with app.app_context():
        rendered = render(practitioner, event, context, now=now)
    for part in (rendered.subject, rendered.text, rendered.html):
        assert part.strip()
        for leftover in ("{{", "{%", "%(", "}}"):
            assert leftover not in part, (leftover, part)
    assert f'<html lang="{language}">' in rendered.html
    assert "Jeanne Martin" in rendered.text and "Jeanne Martin" in rendered.html
    assert "<" not in rendered.text  # plain text, not markup
    links = set(URL.findall(rendered.text)) | set(URL.findall(rendered.html))
    if event in LINK_EVENTS:
        assert links - {"http://localhost:5000/account"} == {
            "http://localhost:5000/one-time/S3CR3T"
        }
    else:
        assert links <= {"http://localhost:5000/account"}  # the account page, not a login
    if event not in ("invitation", "failed_attempts"):
        assert DATES[language] in rendered.text  # when, in Paris, in their language


def test_dates_and_names_from_the_context_are_shown(app):
    practitioner = Practitioner(given_name="Jeanne", family_name="Martin", language="en")
    now = dt.datetime(2026, 1, 15, 9, 0, tzinfo=dt.UTC)
    with app.app_context():
        added = render(practitioner, "factor_added", {"method": "totp", "name": "Phone"}, now=now)
        approved = render(
            practitioner,
            "recovery_approved",
            {"until": SAMPLE["until"], "link": "http://localhost:5000/r/x"},
            now=now,
        )
        escaped = render(practitioner, "factor_added", {"method": "totp", "name": "<b>"}, now=now)
    assert "authenticator app" in added.text and "Phone" in added.text
    assert "16 January 2026, 18:30" in approved.text  # the end of the cooling-off, in Paris
    assert "&lt;b&gt;" in escaped.html and "<b>" not in escaped.html


def test_only_the_three_link_events_may_carry_a_link(app):
    practitioner = Practitioner(given_name="Jeanne", family_name="Martin", language="fr")
    now = dt.datetime(2026, 1, 15, 9, 0, tzinfo=dt.UTC)
    with app.app_context():
        with pytest.raises(ValueError):
            render(practitioner, "password_changed", {"link": "http://x/y"}, now=now)
        with pytest.raises(ValueError):
            render(practitioner, "password_reset", {}, now=now)


def test_the_language_is_the_page_language_at_login_and_kept_outside_a_request(app, clock):
    with app.app_context():
        db = get_db()
        someone = factories.practitioner(db, clock)
        db.commit()
        assert someone.language == "fr"
        mail.remember_language(db, someone.id)  # no request: the stored value stays
        assert someone.language == "fr"
    with app.test_request_context("/", headers={"Accept-Language": "en-GB,en;q=0.8"}):
        db = get_db()
        mail.remember_language(db, someone.id)
        db.commit()
    with app.app_context():
        stored = get_db().get(Practitioner, someone.id)
        assert stored.language == "en"
        notify(get_db(), stored, "password_changed")
        get_db().commit()
    [queued] = rows(app)
    assert queued.subject == "Your password was changed"


def test_a_body_copied_to_another_row_does_not_open(mail_app, clock, smtp_server, caplog):
    with mail_app.app_context():
        db = get_db()
        someone = factories.practitioner(db, clock)
        notify(db, someone, "password_changed")
        notify(db, someone, "password_reset", link="http://localhost:5000/reset/T0KEN")
        db.commit()
        first, second = db.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars()
        first.text_body, first.html_body = second.text_body, second.html_body
        db.commit()
    with caplog.at_level(logging.INFO, logger="idp.mail"):
        report = mail.deliver_app(mail_app)
    assert (report.sent, report.given_up) == (1, 1)
    assert len(smtp_server.wait_for(1)) == 1
    failed = rows(mail_app)[0]
    assert failed.failed_at is not None and failed.last_error == "DecryptionError"
    assert failed.text_body is None
    assert "T0KEN" not in caplog.text


def test_smtp_down_keeps_the_message_queued_then_it_is_sent_once(
    database_url, tmp_path, clock, caplog
):
    port = free_port()  # nothing listens there yet
    app = build_app(
        database_url, tmp_path, clock, mail=MailSettings(host="127.0.0.1", port=port, timeout=5)
    )
    try:
        with app.app_context():
            db = get_db()
            someone = factories.practitioner(db, clock, email="lea@example.test")
            notify(db, someone, "password_reset", link="http://localhost:5000/reset/S3CR3T")
            notify(db, someone, "password_changed")
            db.commit()
        started = clock.now()
        with caplog.at_level(logging.INFO, logger="idp.mail"):
            report = mail.deliver_app(app)
        assert (report.sent, report.retried, report.unreachable) == (
            0,
            2,
            "ConnectionRefusedError",
        )
        waiting = rows(app)
        assert [m.attempts for m in waiting] == [1, 1]
        assert {m.next_attempt_at for m in waiting} == {started + dt.timedelta(minutes=1)}
        assert all(m.sent_at is None and m.failed_at is None for m in waiting)
        expected = (
            f"mail: cannot reach 127.0.0.1:{port} (ConnectionRefusedError): 2 message(s) "
            f"waiting, next attempt at {(started + dt.timedelta(minutes=1)).isoformat()}"
        )
        assert expected in caplog.messages
        for secret in ("S3CR3T", "lea@example.test", "/reset/"):
            assert secret not in caplog.text

        assert mail.deliver_app(app).retried == 0  # not due yet: not tried again
        clock.advance(61)
        assert mail.deliver_app(app).retried == 2  # still down: 2 minutes more
        assert {m.attempts for m in rows(app)} == {2}
        assert {m.next_attempt_at for m in rows(app)} == {clock.now() + dt.timedelta(minutes=2)}

        server = SmtpServer(port).start()
        try:
            assert mail.deliver_app(app).sent == 0  # the server is up, but not yet time
            clock.advance(121)
            assert mail.deliver_app(app).sent == 2
            clock.advance(3600)
            assert mail.deliver_app(app).sent == 0
            received = server.wait_for(2)
            assert len(received) == 2
            assert "http://localhost:5000/reset/S3CR3T" in text_of(received[0])
        finally:
            server.stop()
        assert all(m.sent_at is not None and m.attempts == 3 for m in rows(app))
    finally:
        dispose_app(app)


def test_retries_back_off_then_give_up(database_url, tmp_path, clock):
    assert [outbox.retry_delay(n).total_seconds() / 60 for n in range(1, 10)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        60,
        60,
        60,
    ]
    app = build_app(
        database_url, tmp_path, clock, mail=MailSettings(host="127.0.0.1", port=free_port())
    )
    try:
        with app.app_context():
            db = get_db()
            notify(db, factories.practitioner(db, clock), "password_changed")
            db.commit()
        for attempt in range(1, outbox.MAX_ATTEMPTS + 1):
            report = mail.deliver_app(app)
            assert report.retried + report.given_up == 1, attempt
            clock.advance(3601)
        [given_up] = rows(app)
        assert given_up.attempts == outbox.MAX_ATTEMPTS
        assert given_up.failed_at is not None and given_up.next_attempt_at is None
        assert given_up.text_body is None
        state = mail.status(app)
        assert (state.waiting, state.failed, state.sent) == (0, 1, 0)
        assert mail.deliver_app(app).retried == 0
    finally:
        dispose_app(app)


def test_mail_off_leaves_messages_queued(app, clock):
    with app.app_context():
        db = get_db()
        notify(db, factories.practitioner(db, clock), "password_changed")
        db.commit()
    report = mail.deliver_app(app)
    assert report.disabled and report.sent == 0
    state = mail.status(app)
    assert state.waiting == 1 and state.oldest_waiting == clock.now()


def test_two_senders_at_once_send_each_message_once(mail_app, clock, smtp_server):
    with mail_app.app_context():
        db = get_db()
        for n in range(20):
            someone = factories.practitioner(db, clock, email=f"p{n}@example.test")
            notify(db, someone, "password_changed")
        db.commit()
    start = threading.Barrier(2)
    reports = []

    def sender():
        start.wait()
        reports.append(mail.deliver_app(mail_app))

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(r.sent for r in reports) == 20
    received = smtp_server.wait_for(20)
    assert sorted(m["To"] for m in received) == sorted(f"p{n}@example.test" for n in range(20))
    assert mail.deliver_app(mail_app).sent == 0
    assert len(smtp_server.messages) == 20


def test_a_claimed_message_is_not_taken_twice(mail_app, clock):
    with mail_app.app_context():
        db = get_db()
        notify(db, factories.practitioner(db, clock), "password_changed")
        db.commit()
        [message_id] = outbox.due_ids(db, now=clock.now(), limit=10)
        assert outbox.claim(db, message_id, now=clock.now())
        db.commit()
        assert not outbox.claim(db, message_id, now=clock.now())  # another sender's turn
        assert outbox.due_ids(db, now=clock.now(), limit=10) == []
        later = clock.now() + outbox.LEASE
        assert outbox.due_ids(db, now=later, limit=10) == [message_id]  # a sender that died


def test_an_address_no_message_can_carry_is_given_up_at_once(mail_app, clock, smtp_server):
    with mail_app.app_context():
        db = get_db()
        rendered = render(
            Practitioner(given_name="A", family_name="B", language="en"),
            "password_changed",
            {},
            now=clock.now(),
        )
        outbox.add(
            db,
            to_address="someone@example.test\r\nBcc: other@example.test",
            rendered=rendered,
            cipher=mail_app.extensions["idp.cipher"],
            now=clock.now(),
        )
        db.commit()
    report = mail.deliver_app(mail_app)
    assert (report.sent, report.given_up) == (0, 1)
    [given_up] = rows(mail_app)
    assert given_up.failed_at == clock.now() and given_up.last_error == "ValueError"
    assert smtp_server.messages == []


def test_a_login_in_english_makes_the_emails_english(live_server, demo, clock):
    from tests.support.oidc import UserAgent, totp_now

    agent = UserAgent(live_server.url)
    agent.http.headers["Accept-Language"] = "en"
    page = agent.login_password(demo["username"], demo["password"])
    done = agent.submit_totp(totp_now(demo["totp_secret"], clock), page)
    assert done.status_code == 200
    with live_server.app.app_context():
        db = get_db()
        someone = db.execute(
            select(Practitioner).where(Practitioner.rpps == demo["username"])
        ).scalar_one()
        assert someone.language == "en"
        notify(db, someone, "factor_removed", method="totp", name="Phone")
        db.commit()
    assert rows(live_server.app)[-1].subject == "A sign-in method was removed from your account"
