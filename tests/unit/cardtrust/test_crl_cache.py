"""Shared CRL cache: real HTTP downloads, real stores, an injected clock (STANDARDS.md SC-01)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from idp.factors.smartcard import verify as v
from idp.factors.smartcard.trust import (
    CachedCrl,
    CrlCache,
    CrlFetchError,
    CrlStoreUnavailableError,
    HttpCrlFetcher,
    RedisCrlStore,
    crl_urls_of,
)
from tests.support import pki
from tests.unit.cardtrust.conftest import TEST_POLICY, make_trust

FAIL_OPEN = dataclasses.replace(TEST_POLICY, crl_fail_closed=False)
WEEK = dt.timedelta(days=7)


def crl_url(card_pki):
    return card_pki.crl_url(card_pki.intermediate)


def arl_url(card_pki):
    return card_pki.crl_url(card_pki.root)


def serve_both(crl_server, card_pki, **crl_kwargs):
    crl_server.serve(crl_url(card_pki), card_pki.crl(**crl_kwargs))
    crl_server.serve(arl_url(card_pki), pki.make_crl(issuer=card_pki.root))


def verify(practitioner, trust, crls, *, now=pki.NOW):
    return v.verify_certificate(
        certificate_der=practitioner.der,
        trust_anchors=trust.anchors,
        intermediates=trust.intermediates,
        crls=crls,
        now=now,
        policy=trust.policy,
    )


def test_downloads_once_then_every_process_shares_the_store(
    store, crl_server, card_pki, practitioner, trust, clock
):
    serve_both(crl_server, card_pki)
    first = CrlCache(store=store, trust=trust, clock=clock)
    other_process = CrlCache(store=store, trust=trust, clock=clock)

    crls = first.crls_for_certificate(certificate_der=practitioner.der)
    again = other_process.crls_for_certificate(certificate_der=practitioner.der)

    assert {crl.issuer for crl in crls} == {card_pki.intermediate.name, card_pki.root.name}
    assert [c.public_bytes(Encoding.DER) for c in again] == [
        c.public_bytes(Encoding.DER) for c in crls
    ]
    assert crl_server.hits_for(crl_url(card_pki)) == 1
    assert crl_server.hits_for(arl_url(card_pki)) == 1
    assert verify(practitioner, trust, again).surname == "LEROY"


def test_stored_entry_keeps_next_update_and_fetch_time(store, crl_server, card_pki, trust, clock):
    crl = card_pki.crl()
    crl_server.serve(crl_url(card_pki), crl)

    CrlCache(store=store, trust=trust, clock=clock).get(crl_url(card_pki))

    entry = store.get(crl_url(card_pki))
    assert entry == CachedCrl(
        url=crl_url(card_pki),
        der=crl.public_bytes(Encoding.DER),
        fetched_at=pki.NOW,
        next_update=crl.next_update_utc,
    )
    assert store.get(crl_url(card_pki) + "?other") is None


def test_refreshes_after_next_update_and_sees_a_new_revocation(
    store, crl_server, card_pki, practitioner, clock
):
    trust = make_trust(card_pki, crl_max_age=dt.timedelta(days=30))
    cache = CrlCache(store=store, trust=trust, clock=clock)
    serve_both(crl_server, card_pki)
    verify(practitioner, trust, cache.crls_for_certificate(certificate_der=practitioner.der))

    later = pki.NOW + dt.timedelta(days=8)
    serve_both(
        crl_server,
        card_pki,
        last_update=later - dt.timedelta(hours=1),
        revoked_serials=(practitioner.certificate.serial_number,),
    )
    clock.advance(days=6)  # still before nextUpdate: the cached CRL is used
    cache.crls_for_certificate(certificate_der=practitioner.der)
    assert crl_server.hits_for(crl_url(card_pki)) == 1

    clock.set(later)
    crls = cache.crls_for_certificate(certificate_der=practitioner.der)

    assert crl_server.hits_for(crl_url(card_pki)) == 2
    with pytest.raises(v.CertificateRevokedError):
        verify(practitioner, trust, crls, now=later)


def test_refreshes_after_max_age_even_before_next_update(store, crl_server, card_pki, clock):
    trust = make_trust(card_pki, crl_max_age=dt.timedelta(hours=1))
    cache = CrlCache(store=store, trust=trust, clock=clock)
    crl_server.serve(crl_url(card_pki), card_pki.crl())
    cache.get(crl_url(card_pki))

    clock.advance(minutes=59)
    cache.get(crl_url(card_pki))
    assert crl_server.hits_for(crl_url(card_pki)) == 1

    clock.advance(minutes=1)
    cache.get(crl_url(card_pki))
    assert crl_server.hits_for(crl_url(card_pki)) == 2


def test_failed_refresh_keeps_a_cached_crl_that_is_still_valid(
    store, crl_server, card_pki, practitioner, clock
):
    trust = make_trust(card_pki, crl_max_age=dt.timedelta(hours=1))
    cache = CrlCache(store=store, trust=trust, clock=clock)
    serve_both(crl_server, card_pki)
    cache.crls_for_certificate(certificate_der=practitioner.der)

    crl_server.fail(crl_url(card_pki))
    clock.advance(hours=2)
    crls = cache.crls_for_certificate(certificate_der=practitioner.der)

    assert crl_server.hits_for(crl_url(card_pki)) == 2
    assert verify(practitioner, trust, crls, now=clock.now())


def test_fail_closed_refuses_when_refresh_fails_past_next_update(
    store, crl_server, card_pki, practitioner, trust, clock
):
    cache = CrlCache(store=store, trust=trust, clock=clock)
    serve_both(crl_server, card_pki)
    cache.crls_for_certificate(certificate_der=practitioner.der)

    crl_server.fail(crl_url(card_pki))
    clock.advance(days=8)

    with pytest.raises(v.CrlStaleError, match="refresh failed"):
        cache.crls_for_certificate(certificate_der=practitioner.der)


def test_fail_open_uses_the_stale_crl_with_a_warning(
    store, crl_server, card_pki, practitioner, clock, caplog
):
    trust = make_trust(card_pki, policy=FAIL_OPEN)
    cache = CrlCache(store=store, trust=trust, clock=clock)
    serve_both(crl_server, card_pki)
    cache.crls_for_certificate(certificate_der=practitioner.der)

    crl_server.fail(crl_url(card_pki))
    crl_server.fail(arl_url(card_pki))
    clock.advance(days=8)
    with caplog.at_level(logging.WARNING, logger="idp.factors.smartcard.trust"):
        crls = cache.crls_for_certificate(certificate_der=practitioner.der)

    assert card_pki.intermediate.name in {crl.issuer for crl in crls}
    assert any("past its nextUpdate" in r.getMessage() for r in caplog.records)
    assert verify(practitioner, trust, crls, now=clock.now())


def test_stale_crl_still_refuses_a_listed_card_when_failing_open(
    store, crl_server, card_pki, clock
):
    revoked = card_pki.issue(id_nat="8" + pki.make_rpps())
    trust = make_trust(card_pki, policy=FAIL_OPEN)
    cache = CrlCache(store=store, trust=trust, clock=clock)
    serve_both(crl_server, card_pki, revoked_serials=(revoked.certificate.serial_number,))
    cache.crls_for_certificate(certificate_der=revoked.der)

    crl_server.fail(crl_url(card_pki))
    clock.advance(days=8)
    crls = cache.crls_for_certificate(certificate_der=revoked.der)

    with pytest.raises(v.CertificateRevokedError):
        verify(revoked, trust, crls, now=clock.now())


def test_no_crl_ever_fetched_fails_closed(store, crl_server, card_pki, practitioner, trust, clock):
    crl_server.fail(crl_url(card_pki))

    with pytest.raises(v.CrlMissingError, match="HTTP 503"):
        CrlCache(store=store, trust=trust, clock=clock).crls_for_certificate(
            certificate_der=practitioner.der
        )


def test_no_crl_ever_fetched_fails_open_with_a_warning(
    store, crl_server, card_pki, practitioner, clock, caplog
):
    trust = make_trust(card_pki, policy=FAIL_OPEN)
    with caplog.at_level(logging.WARNING, logger="idp.factors.smartcard.trust"):
        crls = CrlCache(store=store, trust=trust, clock=clock).crls_for_certificate(
            certificate_der=practitioner.der
        )

    assert crls == []
    assert any("revocation unchecked" in r.getMessage() for r in caplog.records)
    assert verify(practitioner, trust, crls)


def test_crl_signed_by_another_key_is_never_cached(store, crl_server, card_pki, trust, clock):
    forged = pki.make_crl(issuer=card_pki.intermediate, signing_key=pki.new_key())
    crl_server.serve(crl_url(card_pki), forged)

    with pytest.raises(v.CrlMissingError, match="not signed by a configured CA"):
        CrlCache(store=store, trust=trust, clock=clock).get(crl_url(card_pki))
    assert store.get(crl_url(card_pki)) is None


def test_tampered_crl_bytes_are_rejected_and_the_good_copy_kept(
    store, crl_server, card_pki, trust, clock
):
    cache = CrlCache(store=store, trust=trust, clock=clock)
    good = card_pki.crl()
    crl_server.serve(crl_url(card_pki), good)
    cache.get(crl_url(card_pki))

    tampered = bytearray(good.public_bytes(Encoding.DER))
    tampered[-10] ^= 0x01  # inside the signature
    crl_server.serve(crl_url(card_pki), bytes(tampered))
    clock.advance(days=8)

    with pytest.raises(v.CrlStaleError, match="not signed by a configured CA"):
        cache.get(crl_url(card_pki))
    assert store.get(crl_url(card_pki)).der == good.public_bytes(Encoding.DER)


def test_crl_from_an_unknown_ca_is_refused(store, crl_server, card_pki, trust, clock):
    stranger = pki.make_pki(test=True)
    crl_server.serve(crl_url(card_pki), stranger.crl())

    with pytest.raises(v.CrlMissingError, match="not signed by a configured CA"):
        CrlCache(store=store, trust=trust, clock=clock).get(crl_url(card_pki))


def test_an_older_crl_cannot_roll_back_the_cache(store, crl_server, card_pki, trust, clock):
    """A replayed, validly signed but older CRL (say, from before a revocation) is refused."""
    cache = CrlCache(store=store, trust=trust, clock=clock)
    newer = card_pki.crl(revoked_serials=(1234,))
    crl_server.serve(crl_url(card_pki), newer)
    cache.get(crl_url(card_pki))

    older = card_pki.crl(last_update=pki.NOW - dt.timedelta(days=3))
    crl_server.serve(crl_url(card_pki), older)
    clock.advance(days=8)

    with pytest.raises(v.CrlStaleError, match="older than the cached CRL"):
        cache.get(crl_url(card_pki))
    assert store.get(crl_url(card_pki)).der == newer.public_bytes(Encoding.DER)


def test_untrusted_certificate_triggers_no_download(crl_server, sqlite_store, trust, clock):
    """Distribution points come from the certificate: never fetch them before it verifies."""
    stranger_pki = pki.make_pki(test=True, crl_url_template=crl_server.url_template)
    stranger = stranger_pki.issue(id_nat="8" + pki.make_rpps())

    with pytest.raises(v.UntrustedCertificateError):
        CrlCache(store=sqlite_store, trust=trust, clock=clock).crls_for_certificate(
            certificate_der=stranger.der
        )
    assert sum(crl_server.hits.values()) == 0


def test_ca_crl_is_optional_unless_required(
    sqlite_store, crl_server, card_pki, practitioner, clock
):
    crl_server.serve(crl_url(card_pki), card_pki.crl())
    crl_server.fail(arl_url(card_pki), 404)

    lenient = CrlCache(store=sqlite_store, trust=make_trust(card_pki), clock=clock)
    assert len(lenient.crls_for_certificate(certificate_der=practitioner.der)) == 1

    strict_policy = dataclasses.replace(TEST_POLICY, require_ca_crls=True)
    strict = CrlCache(
        store=sqlite_store, trust=make_trust(card_pki, policy=strict_policy), clock=clock
    )
    with pytest.raises(v.CrlMissingError):
        strict.crls_for_certificate(certificate_der=practitioner.der)


def test_extra_file_url_serves_a_locally_mirrored_crl(sqlite_store, card_pki, tmp_path, clock):
    mirrored = tmp_path / "personnes.crl"
    mirrored.write_bytes(card_pki.crl().public_bytes(Encoding.PEM))
    trust = make_trust(card_pki, crl_urls=(mirrored.as_uri(),))
    cache = CrlCache(store=sqlite_store, trust=trust, clock=clock)

    crls = cache.crls_for_chain([card_pki.root.certificate])  # no distribution point

    assert [crl.issuer for crl in crls] == [card_pki.intermediate.name]


def test_oversized_crl_is_refused(sqlite_store, crl_server, card_pki, clock):
    crl_server.serve(crl_url(card_pki), card_pki.crl(revoked_serials=tuple(range(1, 200))))
    trust = make_trust(card_pki, crl_max_bytes=1024)

    with pytest.raises(v.CrlMissingError, match="over the limit"):
        CrlCache(store=sqlite_store, trust=trust, clock=clock).get(crl_url(card_pki))


def test_fetcher_refuses_other_schemes_and_non_crls(crl_server):
    fetch = HttpCrlFetcher(timeout_seconds=2)
    with pytest.raises(CrlFetchError, match="unsupported scheme"):
        fetch("ldap://igc-sante.test/cn=crl")
    with pytest.raises(CrlFetchError, match="HTTP 404"):
        fetch(f"http://127.0.0.1:{crl_server.port}/nothing.crl")
    port = free_port()
    with pytest.raises(CrlFetchError, match="ConnectionError"):
        fetch(f"http://127.0.0.1:{port}/down.crl")


def test_refresh_downloads_now(sqlite_store, crl_server, card_pki, trust, clock):
    crl_server.serve(crl_url(card_pki), card_pki.crl())
    cache = CrlCache(store=sqlite_store, trust=trust, clock=clock)
    cache.get(crl_url(card_pki))

    cache.refresh(crl_url(card_pki))

    assert crl_server.hits_for(crl_url(card_pki)) == 2


def test_only_http_distribution_points_are_followed(card_pki):
    builder = (
        x509.CertificateBuilder()
        .subject_name(card_pki.intermediate.name)
        .issuer_name(card_pki.root.name)
        .public_key(pki.new_key().public_key())
        .serial_number(7)
        .not_valid_before(pki.VALID_FROM)
        .not_valid_after(pki.VALID_UNTIL)
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[
                            x509.UniformResourceIdentifier("ldap://ldap.test/cn=ca?crl"),
                            x509.UniformResourceIdentifier("http://crl.test/a.crl"),
                            x509.UniformResourceIdentifier("file:///etc/shadow"),
                        ],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    )
    certificate = builder.sign(card_pki.root.key, hashes.SHA256())

    assert crl_urls_of(certificate) == ["http://crl.test/a.crl"]


def test_unreachable_redis_fails_closed(card_pki, trust, clock):
    import redis

    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    cache = CrlCache(store=RedisCrlStore(client), trust=trust, clock=clock)

    with pytest.raises(CrlStoreUnavailableError):
        cache.get(crl_url(card_pki))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
