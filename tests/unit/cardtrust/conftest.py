"""Fixtures: a CRL server on 127.0.0.1, a PKI whose distribution points name it, CRL stores."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine

from idp.clock import FrozenClock
from idp.factors.smartcard.trust import CardTrust, DatabaseCrlStore, RedisCrlStore
from idp.factors.smartcard.verify import CardPolicy
from tests.support import pki
from tests.support.crl import CrlServer
from tests.support.idp_server import scratch_postgres_database

TEST_POLICY = CardPolicy(production=False)


@pytest.fixture(scope="module")
def crl_server():
    server = CrlServer()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_routes(request):
    if "crl_server" in request.fixturenames:
        request.getfixturevalue("crl_server").reset()


@pytest.fixture(scope="module")
def card_pki(crl_server) -> pki.Pki:
    return pki.make_pki(test=True, crl_url_template=crl_server.url_template)


@pytest.fixture(scope="module")
def practitioner(card_pki) -> pki.CardCertificate:
    return card_pki.issue(id_nat="8" + pki.make_rpps(), surname="LEROY", given_name="ANNE")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(pki.NOW)


@pytest.fixture
def trust(card_pki) -> CardTrust:
    return make_trust(card_pki)


def make_trust(card_pki: pki.Pki, **overrides) -> CardTrust:
    values = dict(
        anchors=(card_pki.root.certificate,),
        intermediates=(card_pki.intermediate.certificate,),
        policy=TEST_POLICY,
    )
    values.update(overrides)
    return CardTrust(**values)


def ci_or_skip(message: str) -> None:
    """A missing service fails the run in CI (never a silent skip), skips on a laptop."""
    if os.environ.get("CI"):
        pytest.fail(f"required in CI: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def redis_store(redis_client):
    client = redis_client
    prefix = f"idp:test-crl:{uuid.uuid4().hex}:"
    yield RedisCrlStore(client, prefix=prefix)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)


@pytest.fixture
def sqlite_store(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'crl.sqlite3'}")
    store = DatabaseCrlStore(engine)
    store.create_table()
    yield store
    engine.dispose()


@pytest.fixture
def postgres_store():
    with scratch_postgres_database("idp_crl") as url:
        engine = create_engine(url)
        store = DatabaseCrlStore(engine)
        store.create_table()
        yield store
        engine.dispose()


@pytest.fixture(params=["sqlite", "redis", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request):
    """Each shared store the IdP can run with."""
    return request.getfixturevalue(f"{request.param}_store")
