"""Operator trust for smart-card logins: CA certificates, card trust settings, shared CRL cache.

The verifier (``idp.factors.smartcard.verify``) is pure; this module feeds it what an operator
configures and what the network provides. Environment, read by ``load_card_trust`` (same style
as ``idp.config.load_settings``):

``IDP_SMARTCARD_TRUST_ANCHORS``
    Root CA certificates (``AC RACINE IGC-SANTE ...``): a PEM bundle, one DER file, or a
    directory of ``.pem``/``.crt``/``.cer``/``.der`` files. Unset: card login is off.
``IDP_SMARTCARD_INTERMEDIATES``
    Same formats, optional: the ``AC IGC-SANTE ... PERSONNES`` CAs (cards send only their own
    certificate, so the IdP must know the intermediates).
``IDP_SMARTCARD_CRL_URLS``
    Optional extra CRL URLs (``http``, ``https`` or ``file``), separated by spaces or commas.
    By default the CRL distribution points of the verified card certificate and of its
    intermediates are used (``http``/``https`` only).
``IDP_SMARTCARD_CRL_FAIL_CLOSED``
    ``true`` (default): no up-to-date CRL means the login is refused. ``false``: a stale or
    missing CRL is tolerated with a warning (a listed serial is refused either way).
``IDP_SMARTCARD_CRL_MAX_AGE``
    Seconds after which a CRL is downloaded again even before its nextUpdate (default 21600).
``IDP_SMARTCARD_CRL_MAX_BYTES``
    Largest CRL accepted, in bytes (default 10485760).
``IDP_SMARTCARD_CRL_TIMEOUT``
    Socket timeout of one CRL download, in seconds (default 10; 6x that for the whole body).
``IDP_SMARTCARD_ALLOW_TEST_CARDS``
    ``false`` (default): test CAs (``OU=IGC-SANTE TEST``, ``TEST AC ...``) and ``997`` RPPS
    numbers are refused, and a test CA among the configured certificates is a configuration
    error. ``true`` only on test platforms.
``IDP_SMARTCARD_MECHANISMS``
    Accepted signature mechanisms, comma-separated (default ``SHA256_RSA_PKCS`` and
    ``SHA256_RSA_PKCS_PSS``).
``IDP_TRUSTED_PROXIES``, ``IDP_SMARTCARD_CERT_HEADER``, ``IDP_SMARTCARD_VERIFY_HEADER``,
``IDP_SMARTCARD_PROXY_VERIFIES``
    The TLS client certificate forwarded by the reverse proxy: see
    ``idp.factors.smartcard.forwarded``.

CRLs are cached in a store shared by all server processes (Redis or the database). A CRL is
used until its nextUpdate (or ``IDP_SMARTCARD_CRL_MAX_AGE``), then downloaded again; it is
cached only after its signature checks out against a configured CA and only if it is not older
than the cached one (an attacker on the plain-HTTP path cannot roll revocations back). A store
that cannot be reached raises CrlStoreUnavailableError (fail closed, like the throttles).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Table, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from idp.clock import Clock, as_utc
from idp.config import ConfigError
from idp.factors.smartcard.forwarded import (
    ForwardingConfig,
    ForwardingConfigError,
    load_forwarding_config,
    parse_flag,
)
from idp.factors.smartcard.verify import (
    CardPolicy,
    CrlMissingError,
    CrlStaleError,
    is_crl_signed_by,
    is_test_authority,
    verified_chain,
)
from idp.models import CrlCacheEntry
from smartcard.protocol import SUPPORTED_MECHANISMS

logger = logging.getLogger(__name__)

DEFAULT_CRL_MAX_AGE = dt.timedelta(hours=6)
DEFAULT_CRL_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_CRL_TIMEOUT_SECONDS = 10.0
CRL_BODY_DEADLINE_FACTOR = 6
CRL_STORE_RETENTION = dt.timedelta(days=30)
MAX_CDP_URLS = 4
CERTIFICATE_SUFFIXES = frozenset({".pem", ".crt", ".cer", ".der"})
CDP_SCHEMES = frozenset({"http", "https"})
EXTRA_URL_SCHEMES = frozenset({"http", "https", "file"})


class CardTrustConfigError(ConfigError):
    """Smart-card trust settings are unreadable or unsafe; the message names the variable."""


class CrlFetchError(Exception):
    """A CRL could not be downloaded, or what came back is not an acceptable CRL."""


class CrlStoreUnavailableError(Exception):
    """The shared CRL store (Redis or database) cannot be reached."""


@dataclass(frozen=True, slots=True)
class CardTrust:
    """Everything a card login is checked against, as configured by the operator."""

    anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    policy: CardPolicy = CardPolicy()
    crl_urls: tuple[str, ...] = ()
    crl_max_age: dt.timedelta = DEFAULT_CRL_MAX_AGE
    crl_max_bytes: int = DEFAULT_CRL_MAX_BYTES
    crl_timeout_seconds: float = DEFAULT_CRL_TIMEOUT_SECONDS
    forwarding: ForwardingConfig = field(default_factory=ForwardingConfig)

    @property
    def authorities(self) -> tuple[x509.Certificate, ...]:
        """The CAs whose CRLs may be cached."""
        return self.anchors + self.intermediates


# --- configuration -------------------------------------------------------------------------


def load_card_trust(environ: Mapping[str, str] | None = None) -> CardTrust | None:
    """Read the environment; None when no trust anchor is configured (card login off)."""
    env = dict(os.environ if environ is None else environ)
    anchors_path = env.get("IDP_SMARTCARD_TRUST_ANCHORS", "").strip()
    if not anchors_path:
        dependent = [
            name
            for name in ("IDP_SMARTCARD_INTERMEDIATES", "IDP_SMARTCARD_CRL_URLS")
            if env.get(name, "").strip()
        ]
        if dependent:
            raise CardTrustConfigError(
                f"{', '.join(dependent)} set without IDP_SMARTCARD_TRUST_ANCHORS"
            )
        return None
    allow_test = parse_bool(env, "IDP_SMARTCARD_ALLOW_TEST_CARDS", default=False)
    anchors = load_certificates(anchors_path, variable="IDP_SMARTCARD_TRUST_ANCHORS")
    intermediates_path = env.get("IDP_SMARTCARD_INTERMEDIATES", "").strip()
    intermediates = (
        load_certificates(intermediates_path, variable="IDP_SMARTCARD_INTERMEDIATES")
        if intermediates_path
        else ()
    )
    if not allow_test:
        _refuse_test_authorities(anchors, variable="IDP_SMARTCARD_TRUST_ANCHORS")
        _refuse_test_authorities(intermediates, variable="IDP_SMARTCARD_INTERMEDIATES")
    try:
        forwarding = load_forwarding_config(env)
    except ForwardingConfigError as exc:
        raise CardTrustConfigError(str(exc)) from exc
    policy = CardPolicy(
        production=not allow_test,
        crl_fail_closed=parse_bool(env, "IDP_SMARTCARD_CRL_FAIL_CLOSED", default=True),
        mechanisms=parse_mechanisms(env.get("IDP_SMARTCARD_MECHANISMS", "")),
    )
    return CardTrust(
        anchors=anchors,
        intermediates=intermediates,
        policy=policy,
        crl_urls=parse_crl_urls(env.get("IDP_SMARTCARD_CRL_URLS", "")),
        crl_max_age=dt.timedelta(
            seconds=parse_positive(
                env, "IDP_SMARTCARD_CRL_MAX_AGE", default=DEFAULT_CRL_MAX_AGE.total_seconds()
            )
        ),
        crl_max_bytes=int(
            parse_positive(env, "IDP_SMARTCARD_CRL_MAX_BYTES", default=DEFAULT_CRL_MAX_BYTES)
        ),
        crl_timeout_seconds=parse_positive(
            env, "IDP_SMARTCARD_CRL_TIMEOUT", default=DEFAULT_CRL_TIMEOUT_SECONDS
        ),
        forwarding=forwarding,
    )


def load_certificates(path: str | Path, *, variable: str) -> tuple[x509.Certificate, ...]:
    """CA certificates from a PEM bundle, a DER file or a directory of both, deduplicated."""
    source = Path(path)
    try:
        if source.is_dir():
            files = sorted(p for p in source.iterdir() if p.suffix.lower() in CERTIFICATE_SUFFIXES)
            certificates = [c for file in files for c in _read_certificate_file(file, variable)]
        else:
            certificates = _read_certificate_file(source, variable)
    except OSError as exc:
        raise CardTrustConfigError(f"{variable}: cannot read {source}: {exc.strerror}") from exc
    if not certificates:
        raise CardTrustConfigError(f"{variable}: no certificate found in {source}")
    unique: dict[bytes, x509.Certificate] = {}
    for certificate in certificates:
        _require_ca(certificate, variable=variable)
        unique.setdefault(certificate.public_bytes(Encoding.DER), certificate)
    return tuple(unique.values())


def parse_bool(environ: Mapping[str, str], variable: str, *, default: bool) -> bool:
    return parse_flag(environ, variable, default=default, error=CardTrustConfigError)


def parse_positive(environ: Mapping[str, str], variable: str, *, default: float) -> float:
    value = environ.get(variable, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError as exc:
        raise CardTrustConfigError(f"{variable}: expected a number, got {value!r}") from exc
    if number <= 0:
        raise CardTrustConfigError(f"{variable}: must be positive")
    return number


def parse_mechanisms(value: str) -> frozenset[str]:
    names = frozenset(item for item in re.split(r"[\s,]+", value.strip()) if item)
    if not names:
        return SUPPORTED_MECHANISMS
    unknown = names - SUPPORTED_MECHANISMS
    if unknown:
        raise CardTrustConfigError(
            f"IDP_SMARTCARD_MECHANISMS: unknown {', '.join(sorted(unknown))} "
            f"(supported: {', '.join(sorted(SUPPORTED_MECHANISMS))})"
        )
    return names


def parse_crl_urls(value: str) -> tuple[str, ...]:
    urls = tuple(dict.fromkeys(item for item in re.split(r"[\s,]+", value.strip()) if item))
    for url in urls:
        if urllib.parse.urlsplit(url).scheme.lower() not in EXTRA_URL_SCHEMES:
            raise CardTrustConfigError(f"IDP_SMARTCARD_CRL_URLS: {url!r} is not http(s) or file")
    return urls


def _read_certificate_file(path: Path, variable: str) -> list[x509.Certificate]:
    data = path.read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise CardTrustConfigError(f"{variable}: {path} is not a PEM or DER certificate") from exc


def _require_ca(certificate: x509.Certificate, *, variable: str) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CardTrustConfigError(
            f"{variable}: {certificate.subject.rfc4514_string()} is not a CA certificate"
        )


def _refuse_test_authorities(certificates: Iterable[x509.Certificate], *, variable: str) -> None:
    for certificate in certificates:
        if is_test_authority(certificate):
            raise CardTrustConfigError(
                f"{variable}: test CA {certificate.subject.rfc4514_string()} in production; "
                "set IDP_SMARTCARD_ALLOW_TEST_CARDS=true on test platforms only"
            )


# --- CRL fetching ----------------------------------------------------------------------------


CrlFetcher = Callable[[str], bytes]


class HttpCrlFetcher:
    """Downloads with a timeout and a size cap. CRLs are signed, so plain HTTP is fine;
    ``file:`` serves CRLs an operator mirrors locally (air-gapped hosts)."""

    def __init__(
        self,
        *,
        timeout_seconds: float = DEFAULT_CRL_TIMEOUT_SECONDS,
        max_bytes: int = DEFAULT_CRL_MAX_BYTES,
    ) -> None:
        self._timeout = timeout_seconds
        self._max_bytes = max_bytes

    def __call__(self, url: str) -> bytes:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        if scheme == "file":
            return self._read_file(url)
        if scheme not in CDP_SCHEMES:
            raise CrlFetchError(f"{url}: unsupported scheme")
        import requests  # here: a CRL download is rare, the library is heavy for every worker

        deadline = time.monotonic() + self._timeout * CRL_BODY_DEADLINE_FACTOR
        try:
            with requests.get(
                url,
                timeout=self._timeout,
                stream=True,
                headers={"Accept": "application/pkix-crl, application/x-pkcs7-crl, */*"},
            ) as response:
                if response.status_code != 200:
                    raise CrlFetchError(f"{url}: HTTP {response.status_code}")
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    raise CrlFetchError(f"{url}: {declared} bytes is over the limit")
                body = bytearray()
                for chunk in response.iter_content(chunk_size=64 * 1024):
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise CrlFetchError(f"{url}: over {self._max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise CrlFetchError(f"{url}: download too slow")
                return bytes(body)
        except requests.RequestException as exc:
            raise CrlFetchError(f"{url}: {exc.__class__.__name__}") from exc

    def _read_file(self, url: str) -> bytes:
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        try:
            if path.stat().st_size > self._max_bytes:
                raise CrlFetchError(f"{url}: over {self._max_bytes} bytes")
            return path.read_bytes()
        except OSError as exc:
            raise CrlFetchError(f"{url}: {exc.strerror}") from exc


def parse_crl(data: bytes) -> x509.CertificateRevocationList:
    """DER (the norm for distribution points) or PEM."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CrlFetchError("not a CRL") from exc


def crl_urls_of(certificate: x509.Certificate) -> list[str]:
    """HTTP(S) CRL distribution points; only call on a certificate whose chain verified."""
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    urls = [
        name.value
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
        and urllib.parse.urlsplit(name.value).scheme.lower() in CDP_SCHEMES
    ]
    return list(dict.fromkeys(urls))[:MAX_CDP_URLS]


# --- CRL stores ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedCrl:
    url: str
    der: bytes
    fetched_at: dt.datetime
    next_update: dt.datetime | None


class CrlStore(Protocol):
    """Where processes share downloaded CRLs; errors surface as CrlStoreUnavailableError."""

    def get(self, url: str) -> CachedCrl | None: ...

    def put(self, entry: CachedCrl) -> None: ...


class RedisCrlStore:
    """One hash per URL; kept for ``retention`` so a fail-open deployment still has it."""

    def __init__(
        self,
        client,
        *,
        prefix: str = "idp:crl:",
        retention: dt.timedelta = CRL_STORE_RETENTION,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._retention = retention

    def _key(self, url: str) -> str:
        return self._prefix + hashlib.sha256(url.encode()).hexdigest()

    def get(self, url: str) -> CachedCrl | None:
        import redis

        try:
            values = self._redis.hgetall(self._key(url))
        except redis.RedisError as exc:
            raise CrlStoreUnavailableError(str(exc)) from exc
        if not values or values.get(b"url", b"").decode() != url:
            return None
        next_update = values.get(b"next_update", b"").decode()
        return CachedCrl(
            url=url,
            der=values[b"der"],
            fetched_at=dt.datetime.fromisoformat(values[b"fetched_at"].decode()),
            next_update=dt.datetime.fromisoformat(next_update) if next_update else None,
        )

    def put(self, entry: CachedCrl) -> None:
        import redis

        key = self._key(entry.url)
        mapping = {
            "url": entry.url,
            "der": entry.der,
            "fetched_at": entry.fetched_at.isoformat(),
            "next_update": entry.next_update.isoformat() if entry.next_update else "",
        }
        try:
            pipeline = self._redis.pipeline(transaction=True)
            pipeline.delete(key)
            pipeline.hset(key, mapping=mapping)
            pipeline.expire(key, int(self._retention.total_seconds()))
            pipeline.execute()
        except redis.RedisError as exc:
            raise CrlStoreUnavailableError(str(exc)) from exc


class DatabaseCrlStore:
    """The ``crl_cache`` table (``idp.models.CrlCacheEntry``, created by the migrations).

    Its own connections, committed at once: a CRL shared with other processes must not wait
    for (or be rolled back with) the login request that fetched it.
    """

    def __init__(self, engine: Engine, *, table: Table | None = None) -> None:
        self._engine = engine
        self._table = table if table is not None else CrlCacheEntry.__table__

    def create_table(self) -> None:
        """For a stand-alone store outside a migrated IdP database (tests, tools)."""
        self._table.create(self._engine, checkfirst=True)

    def get(self, url: str) -> CachedCrl | None:
        try:
            with self._engine.connect() as connection:
                row = connection.execute(
                    select(self._table).where(self._table.c.url == url)
                ).one_or_none()
        except SQLAlchemyError as exc:
            raise CrlStoreUnavailableError(str(exc)) from exc
        if row is None:
            return None
        return CachedCrl(
            url=row.url,
            der=bytes(row.der),
            fetched_at=as_utc(row.fetched_at),
            next_update=as_utc(row.next_update) if row.next_update else None,
        )

    def put(self, entry: CachedCrl) -> None:
        values = {
            "der": entry.der,
            "fetched_at": entry.fetched_at.astimezone(dt.UTC),
            "next_update": entry.next_update.astimezone(dt.UTC) if entry.next_update else None,
        }
        try:
            with self._engine.begin() as connection:
                self._upsert(connection, url=entry.url, values=values)
        except SQLAlchemyError as exc:
            raise CrlStoreUnavailableError(str(exc)) from exc

    def _upsert(self, connection, *, url: str, values: dict) -> None:
        dialect = connection.dialect.name
        if dialect in {"postgresql", "sqlite"}:
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            statement = insert(self._table).values(url=url, **values)
            connection.execute(
                statement.on_conflict_do_update(index_elements=[self._table.c.url], set_=values)
            )
            return
        changed = connection.execute(
            update(self._table).where(self._table.c.url == url).values(**values)
        )
        if changed.rowcount == 0:
            connection.execute(self._table.insert().values(url=url, **values))


# --- CRL cache -------------------------------------------------------------------------------


@runtime_checkable
class CrlSource(Protocol):
    def crls_for_certificate(
        self, *, certificate_der: bytes
    ) -> list[x509.CertificateRevocationList]: ...


class CrlCache:
    """CRLs for a card's chain, downloaded once and shared by every process through ``store``.

    Refresh once past nextUpdate or ``trust.crl_max_age``. If the download fails: a cached CRL
    still before its nextUpdate is used; past it, a required CRL (the card issuer's, and CA
    CRLs when ``policy.require_ca_crls``) raises CrlStaleError (CrlMissingError if none was
    ever cached) when failing closed, and is used with a warning when failing open.
    """

    def __init__(
        self,
        *,
        store: CrlStore,
        trust: CardTrust,
        clock: Clock,
        fetcher: CrlFetcher | None = None,
    ) -> None:
        self._store = store
        self._trust = trust
        self._clock = clock
        self._fetch = fetcher or HttpCrlFetcher(
            timeout_seconds=trust.crl_timeout_seconds, max_bytes=trust.crl_max_bytes
        )

    def crls_for_certificate(
        self, *, certificate_der: bytes
    ) -> list[x509.CertificateRevocationList]:
        """Chain first (no URL from an unverified certificate is ever fetched), then CRLs."""
        chain = verified_chain(
            certificate_der=certificate_der,
            trust_anchors=self._trust.anchors,
            intermediates=self._trust.intermediates,
            now=self._clock.now(),
        )
        return self.crls_for_chain(chain)

    def crls_for_chain(
        self, chain: Sequence[x509.Certificate]
    ) -> list[x509.CertificateRevocationList]:
        required: dict[str, bool] = {}
        for position, certificate in enumerate(chain[:-1]):
            for url in crl_urls_of(certificate):
                must = position == 0 or self._trust.policy.require_ca_crls
                required[url] = required.get(url, False) or must
        for url in self._trust.crl_urls:
            required.setdefault(url, False)
        found = [self.get(url, required=must) for url, must in required.items()]
        return [crl for crl in found if crl is not None]

    def get(self, url: str, *, required: bool = True) -> x509.CertificateRevocationList | None:
        now = self._clock.now()
        cached = self._store.get(url)
        if cached is not None and not self._is_due(cached, now=now):
            return parse_crl(cached.der)
        try:
            crl = self._download(url, cached=cached)
        except CrlFetchError as exc:
            return self._fall_back(cached=cached, now=now, required=required, error=exc)
        self._save(url=url, crl=crl, now=now)
        return crl

    def refresh(self, url: str) -> x509.CertificateRevocationList:
        """Download now (e.g. from a periodic job); raises CrlFetchError."""
        crl = self._download(url, cached=self._store.get(url))
        self._save(url=url, crl=crl, now=self._clock.now())
        return crl

    def _save(self, *, url: str, crl: x509.CertificateRevocationList, now: dt.datetime) -> None:
        self._store.put(
            CachedCrl(
                url=url,
                der=crl.public_bytes(Encoding.DER),
                fetched_at=now,
                next_update=crl.next_update_utc,
            )
        )

    def _is_due(self, cached: CachedCrl, *, now: dt.datetime) -> bool:
        if now - cached.fetched_at >= self._trust.crl_max_age:
            return True
        return cached.next_update is None or now >= cached.next_update

    def _download(self, url: str, *, cached: CachedCrl | None) -> x509.CertificateRevocationList:
        crl = parse_crl(self._fetch(url))
        if not any(is_crl_signed_by(crl=crl, issuer=ca) for ca in self._trust.authorities):
            raise CrlFetchError(f"{url}: not signed by a configured CA")
        if cached is not None:
            previous = parse_crl(cached.der)
            if previous.issuer == crl.issuer and crl.last_update_utc < previous.last_update_utc:
                raise CrlFetchError(f"{url}: older than the cached CRL")
        return crl

    def _fall_back(
        self,
        *,
        cached: CachedCrl | None,
        now: dt.datetime,
        required: bool,
        error: CrlFetchError,
    ) -> x509.CertificateRevocationList | None:
        fail_closed = self._trust.policy.crl_fail_closed
        if cached is None:
            if required and fail_closed:
                raise CrlMissingError(f"no CRL: {error}") from error
            logger.warning("CRL unavailable, revocation unchecked: %s", error)
            return None
        if cached.next_update is not None and now < cached.next_update:
            logger.info("CRL refresh failed, cached copy still valid: %s", error)
            return parse_crl(cached.der)
        if required and fail_closed:
            raise CrlStaleError(f"CRL past nextUpdate, refresh failed: {error}") from error
        logger.warning("Using a CRL past its nextUpdate (refresh failed: %s)", error)
        return parse_crl(cached.der)
