"""Shared fixtures: a fresh database per test, an injected clock, a live IdP over HTTP."""

from __future__ import annotations

import pytest

from idp.db import dispose as dispose_app
from tests.support.idp_server import (
    LiveServer,
    TestDatabase,
    build_app,
    real_now_clock,
    require_postgres_in_ci,
)


@pytest.fixture(scope="session")
def test_database(tmp_path_factory):
    require_postgres_in_ci()
    database = TestDatabase(tmp_path_factory.mktemp("db"))
    yield database
    database.drop()


@pytest.fixture
def redis_client():
    from tests.support.redis import redis_client_or_fail

    client = redis_client_or_fail()
    yield client
    client.close()


@pytest.fixture
def clock():
    return real_now_clock()


@pytest.fixture
def database_url(test_database, tmp_path):
    return test_database.fresh_url(tmp_path)


@pytest.fixture
def app(database_url, tmp_path, clock):
    application = build_app(database_url, tmp_path, clock)
    yield application
    dispose_app(application)


@pytest.fixture
def live_server(app):
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture
def demo(live_server):
    """Seeded demo practitioner and client, with the live server's issuer."""
    from idp.demo import seed

    with live_server.app.app_context():
        return seed(rp_url="http://localhost:9999")


# --------------------------------------------------------------------------- smart cards
# Module-scoped: each test module gets its own SoftHSM2 token, PKI and CRL server.


@pytest.fixture(scope="module")
def softhsm():
    from tests.support.softhsm import softhsm_or_skip

    return softhsm_or_skip()


@pytest.fixture(scope="module")
def crl_server():
    from tests.support.crl import CrlServer

    server = CrlServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def card_pki(crl_server):
    from tests.support import pki

    return pki.make_pki(test=True, crl_url_template=crl_server.url_template)


@pytest.fixture(scope="module")
def rpps():
    from tests.support import pki

    return pki.make_rpps(prefix="997")


@pytest.fixture(scope="module")
def card(softhsm, card_pki, rpps):
    """A practitioner card on a SoftHSM2 token, issued by the test IGC-Santé PKI."""
    from tests.support.softhsm import provision_card

    return provision_card(
        softhsm=softhsm,
        issuer=card_pki.intermediate,
        id_nat="8" + rpps,
        surname="MARTIN",
        given_name="JEANNE",
        crl_url_template=card_pki.crl_url_template,
    )


# --------------------------------------------------------------------------- email


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on a free port, collecting what it receives."""
    from tests.support.smtp import SmtpServer

    server = SmtpServer().start()
    yield server
    server.stop()
