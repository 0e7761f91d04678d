"""Fixtures: a CRL server on 127.0.0.1, a PKI whose distribution points name it, CRL stores."""

from __future__ import annotations

import collections
import os
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import create_engine, text

from idp.cardtrust import CardTrust, DatabaseCrlStore, RedisCrlStore
from idp.clock import FrozenClock
from idp.db import normalise_url
from idp.factors.smartcard import CardPolicy
from tests.support import pki

TEST_POLICY = CardPolicy(production=False)


class CrlServer:
    """Serves whatever bytes a test puts at a path; counts requests; can fail on demand."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.failures: dict[str, int] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.hits[self.path] += 1
                status = server.failures.get(self.path)
                body = server.routes.get(self.path)
                if status is None and body is None:
                    status = 404
                if status is not None:
                    self.send_error(status)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.url_template = f"http://127.0.0.1:{self.port}/crl/{{name}}.crl"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.routes.clear()
        self.failures.clear()
        self.hits.clear()

    def serve(self, url: str, crl: x509.CertificateRevocationList | bytes) -> None:
        body = crl if isinstance(crl, bytes) else crl.public_bytes(Encoding.DER)
        self.routes[self.path(url)] = body
        self.failures.pop(self.path(url), None)

    def fail(self, url: str, status: int = 503) -> None:
        self.failures[self.path(url)] = status

    def hits_for(self, url: str) -> int:
        return self.hits[self.path(url)]

    @staticmethod
    def path(url: str) -> str:
        return urllib.parse.urlsplit(url).path

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


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


def redis_url() -> str:
    return os.environ.get("IDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def redis_store():
    import redis

    client = redis.Redis.from_url(redis_url(), socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        ci_or_skip(f"Redis at {redis_url()}: {exc}")
    prefix = f"idp:test-crl:{uuid.uuid4().hex}:"
    yield RedisCrlStore(client, prefix=prefix)
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)
    client.close()


@pytest.fixture
def sqlite_store(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'crl.sqlite3'}")
    store = DatabaseCrlStore(engine)
    store.create_table()
    yield store
    engine.dispose()


@pytest.fixture
def postgres_store():
    server_url = os.environ.get("IDP_TEST_DATABASE_URL")
    if not server_url:
        if os.environ.get("IDP_REQUIRE_POSTGRES"):
            pytest.fail("IDP_REQUIRE_POSTGRES is set but IDP_TEST_DATABASE_URL is not")
        pytest.skip("IDP_TEST_DATABASE_URL not set")
    base = normalise_url(server_url).rsplit("/", 1)[0]
    name = f"idp_crl_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(f"{base}/{name}")
    store = DatabaseCrlStore(engine)
    store.create_table()
    yield store
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "redis", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request):
    """Each shared store the IdP can run with."""
    return request.getfixturevalue(f"{request.param}_store")
