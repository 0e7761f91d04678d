"""A password hash made with older argon2id parameters is replaced at the next successful login,
in the login's own commit; a failed login and an up-to-date hash leave the row alone."""

from __future__ import annotations

from argon2 import PasswordHasher
from sqlalchemy import event

from idp.db import get_db
from idp.models import Practitioner
from idp.services import cipher
from tests.support import factories
from tests.support.oidc import UserAgent

LIBRARY_DEFAULT = "$argon2id$v=19$m=65536,t=3,p=4$"
CURRENT = "$argon2id$v=19$m=9216,t=4,p=1$"


def someone(app, clock, *, password_hash: str | None = None) -> tuple[int, str]:
    """A practitioner with the factories' password (hashed by *password_hash* if given) and an
    authenticator app: the password step leads to the code's page."""
    with app.app_context():
        db = get_db()
        person = factories.practitioner(db, clock)
        factories.totp_device(db, clock, person, cipher=cipher())
        if password_hash is not None:
            person.password_hash = password_hash
        db.commit()
        return person.id, person.rpps


def stored_hash(app, practitioner_id: int) -> str:
    with app.app_context():
        return get_db().get(Practitioner, practitioner_id).password_hash


class Commits:
    """Commits on the request engine (the one the login's unit of work writes on)."""

    def __init__(self, app) -> None:
        self.count = 0
        event.listen(app.extensions["idp.engine"], "commit", self._seen)

    def _seen(self, _connection) -> None:
        self.count += 1


def login(live_server, rpps: str, password: str, commits: Commits):
    """The password step's final page, and how many commits the request engine saw."""
    before = commits.count
    answer = UserAgent(live_server.url, language="en").login_password(rpps, password)
    return answer, commits.count - before


def test_an_old_hash_is_upgraded_by_the_next_login_in_its_own_commit(live_server, clock):
    app = live_server.app
    old = PasswordHasher().hash(factories.PASSWORD)  # the library's defaults
    assert old.startswith(LIBRARY_DEFAULT)
    upgraded_id, upgraded_rpps = someone(app, clock, password_hash=old)
    current_id, current_rpps = someone(app, clock)
    commits = Commits(app)

    page, upgrading_commits = login(live_server, upgraded_rpps, factories.PASSWORD, commits)
    assert page.url.endswith("/login/totp")
    new = stored_hash(app, upgraded_id)
    assert new != old and new.startswith(CURRENT)
    assert app.extensions["idp.passwords"].verify(new, factories.PASSWORD)
    assert not app.extensions["idp.passwords"].needs_rehash(new)

    # The same login without an upgrade commits as many times: the new hash rode on its commit.
    page, plain_commits = login(live_server, current_rpps, factories.PASSWORD, commits)
    assert page.url.endswith("/login/totp")
    assert upgrading_commits == plain_commits, (upgrading_commits, plain_commits)


def test_a_failed_login_leaves_an_old_hash_alone(live_server, clock):
    app = live_server.app
    old = PasswordHasher().hash(factories.PASSWORD)
    practitioner_id, rpps = someone(app, clock, password_hash=old)
    refused = UserAgent(live_server.url, language="en").login_password(rpps, "not the password")
    assert refused.status_code == 401
    assert stored_hash(app, practitioner_id) == old


def test_a_hash_at_the_current_parameters_is_not_rewritten(live_server, clock):
    app = live_server.app
    practitioner_id, rpps = someone(app, clock)
    before = stored_hash(app, practitioner_id)
    assert before.startswith(CURRENT)
    agent = UserAgent(live_server.url, language="en")
    assert agent.login_password(rpps, factories.PASSWORD).url.endswith("/login/totp")
    assert stored_hash(app, practitioner_id) == before
