"""The typed login state: what each step may read, what a new login clears, logins without a
browser kept in the session store (the same backend the app runs on)."""

from __future__ import annotations

import datetime as dt

from idp.auth.flow import (
    Authentication,
    DecoupledLogins,
    LoginState,
    PendingRequest,
    complete_login,
)
from idp.models import AuditEvent

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


class Invitation:
    def __init__(self, invitation_id: int, practitioner_id: int) -> None:
        self.id = invitation_id
        self.practitioner_id = practitioner_id


def pending() -> PendingRequest:
    return PendingRequest(
        params=[["client_id", "app"], ["state", "s1"]],
        fp="f" * 64,
        at=NOW.timestamp(),
        acr="phr",
        login_hint="",
        redirect_uri="https://app.example/cb",
        state="s1",
        client_name="App",
    )


def test_a_new_login_keeps_only_the_pending_request_and_its_own_step_up():
    state = LoginState({})
    state.keep_request(pending())
    state.require_step_up(7, "phrh", then="/account/webauthn/add")
    state.set_step("webauthn", {"authenticate": "c1"})
    state.begin_login(7, now=NOW)
    assert state.pending_request == pending()
    assert state.step_up_for(7).acr == "phrh"
    assert state.step("webauthn") == {}
    assert state.first_factor.practitioner_id == 7
    state.begin_attempt()
    state.begin_login(8, now=NOW)  # another practitioner: the step-up was not theirs
    assert state.step_up is None and state.step_up_for(8) is None
    assert state.first_factor.practitioner_id == 8


def test_an_enrolment_is_honoured_only_in_the_login_that_opened_it():
    state = LoginState({})
    state.begin_enrolment(Invitation(3, 7), now=NOW)
    assert state.enrolment.invitation_id == 3
    state.begin_login(7, now=NOW)  # same person, another login: the enrolment is gone
    assert state.enrolment is None
    other = LoginState({})
    other.begin_enrolment(Invitation(3, 7), now=NOW)
    other._store["first_factor"] = {**other._store["first_factor"], "practitioner_id": 8}
    assert other.enrolment is None  # made for practitioner 7 only


def signed_in(practitioner_id: int, methods=("password", "totp")) -> LoginState:
    state = LoginState({})
    state.begin_login(practitioner_id, now=NOW)
    state.complete(
        Authentication(practitioner_id, ("pwd", "otp"), "substantial", methods=methods[1:]),
        sid="s" * 16,
        now=NOW,
        failures=0,
        last_failure=None,
    )
    return state


def test_a_password_again_keeps_the_own_session_until_it_completes_but_not_someone_elses():
    state = signed_in(7)
    state.begin_login(7, now=NOW)
    assert state.completed.practitioner_id == 7 and state.first_factor.practitioner_id == 7
    state.begin_login(8, now=NOW)
    assert state.completed is None and state.first_factor.practitioner_id == 8


def test_a_confirmation_stands_on_its_own_session_and_adds_to_its_methods():
    state = signed_in(7)
    state.begin_confirmation(7, now=NOW)
    assert state.confirmation.practitioner_id == 7 and state.completed.sid == "s" * 16
    state.abandon()  # given up: the session stays, the confirmation goes
    assert state.confirmation is None and state.first_factor is None
    assert state.completed.practitioner_id == 7
    state.begin_confirmation(7, now=NOW)
    done = state.complete(
        Authentication(7, ("pwd", "hwk", "mfa"), "phr", methods=("webauthn",)),
        sid="t" * 16,
        now=NOW,
        failures=0,
        last_failure=None,
    )
    assert done.methods == ("password", "totp", "webauthn") and done.acr == "phr"
    assert state.confirmation is None and state.first_factor is None


def test_a_confirmation_is_honoured_only_with_the_session_it_was_opened_for():
    state = signed_in(7)
    state.begin_confirmation(7, now=NOW)
    state.forget_completed()  # the account was suspended meanwhile
    assert state.confirmation is None
    state = signed_in(7)
    state.begin_confirmation(7, now=NOW)
    state.restart(sign_out=True)  # "Not you?"
    assert state.confirmation is None and state.completed is None


def test_unreadable_pieces_read_as_absent():
    state = LoginState({"first_factor": {"pid": 7}, "auth": "x", "step.totp": [1]})
    assert state.first_factor is None
    assert state.completed is None
    assert state.step("totp") == {}


def test_a_decoupled_login_lives_in_the_session_store_without_a_browser(app, clock):
    with app.app_context():
        from idp.db import get_db

        store = app.session_interface.store
        logins = DecoupledLogins(store, ttl=600)
        login_id, state = logins.start(now=clock.now())
        state.keep_request(pending())
        state.begin_login(7, now=clock.now())
        assert logins.save(login_id, state, now=clock.now())

        # Another process picks it up by its id: the same typed state.
        again = logins.open(login_id)
        assert again.first_factor.practitioner_id == 7
        assert again.pending_request.client_name == "App"
        db = get_db()
        from tests.support.factories import practitioner

        someone = practitioner(db, clock)
        proof = Authentication(someone.id, ("pwd", "otp", "mfa"), "substantial", methods=("totp",))
        completed = complete_login(db, proof, now=clock.now(), login=again)
        assert completed.methods == ("password", "totp")
        assert logins.save(login_id, again, now=clock.now())
        done = logins.open(login_id).completed
        assert done == completed and done.sid
        assert logins.open(login_id).first_factor is None
        [event] = db.query(AuditEvent).filter_by(event="auth:login:completed").all()
        assert event.practitioner_id == someone.id and event.details["sid"] == completed.sid

        logins.end(login_id)
        assert logins.open(login_id) is None
        assert not logins.save(login_id, again, now=clock.now())  # ended: never revived
        assert logins.open("unknown") is None
