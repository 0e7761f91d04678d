from cryptography.x509.oid import NameOID

from smartcard.certinfo import (
    is_luhn_valid,
    load_certificate,
    read_certificate_info,
    rpps_from_id_nat,
)
from tests.support import pki


def test_reads_identity_from_the_multi_valued_rdn(card_pki):
    issued = card_pki.issue(
        id_nat="810001234565", surname="DE LA TOUR", given_name="ANNE-MARIE", title="Médecin"
    )

    info = read_certificate_info(load_certificate(issued.der))

    assert info.id_nat == "810001234565"
    assert info.rpps == "10001234565"
    assert info.surname == "DE LA TOUR"
    assert info.given_name == "ANNE-MARIE"
    assert info.profession_label == "Médecin"
    assert info.not_after == pki.VALID_UNTIL


def test_subject_really_has_one_multi_valued_rdn(card_pki):
    issued = card_pki.issue(id_nat="8" + pki.make_rpps())

    rdns = list(issued.certificate.subject.rdns)

    assert len(rdns) == 3
    assert {a.oid for a in rdns[2]} == {NameOID.SURNAME, NameOID.COMMON_NAME, NameOID.GIVEN_NAME}


def test_commas_in_names_do_not_confuse_the_reader(card_pki):
    issued = card_pki.issue(id_nat="810001234565", surname="DUPONT, CN=899999999999")

    info = read_certificate_info(issued.certificate)

    assert info.id_nat == "810001234565"
    assert info.surname == "DUPONT, CN=899999999999"


def test_other_identifier_types_have_no_rpps():
    assert rpps_from_id_nat("0751234567") is None
    assert rpps_from_id_nat("81234") is None
    assert rpps_from_id_nat("810001234565") == "10001234565"


def test_generated_rpps_numbers_pass_luhn():
    for _ in range(20):
        number = pki.make_rpps()
        assert len(number) == 11
        assert is_luhn_valid(number)
    assert pki.make_rpps(prefix="997").startswith("997")
