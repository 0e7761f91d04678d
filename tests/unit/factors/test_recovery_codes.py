"""The recovery codes module: format, normalisation, entropy, hashing. Pure functions."""

from __future__ import annotations

import math
import re

import pytest

from idp.crypto import hash_token
from idp.factors.recovery import verify as codes


def test_a_code_is_sixteen_symbols_of_an_alphabet_without_ambiguous_characters():
    assert len(codes.ALPHABET) == 32 and len(set(codes.ALPHABET)) == 32
    for ambiguous in "01IO":
        assert ambiguous not in codes.ALPHABET
    for _ in range(200):
        code = codes.new_code()
        assert len(code) == 16 and set(code) <= set(codes.ALPHABET)


def test_a_code_carries_at_least_64_bits_of_randomness():
    assert codes.ENTROPY_BITS == pytest.approx(16 * math.log2(32)) == pytest.approx(80)
    assert codes.ENTROPY_BITS >= 64


def test_codes_use_every_symbol_and_do_not_repeat():
    drawn = [codes.new_code() for _ in range(500)]
    assert len(set(drawn)) == 500
    assert set("".join(drawn)) == set(codes.ALPHABET)  # 8000 draws cover all 32 symbols


def test_a_set_holds_ten_distinct_codes():
    issued = codes.new_codes()
    assert len(issued) == codes.COUNT == 10 and len(set(issued)) == 10


def test_codes_are_shown_in_four_groups_of_four():
    assert codes.display("ABCDEFGHJKLMNPQR") == "ABCD-EFGH-JKLM-NPQR"
    assert re.fullmatch(r"([A-Z2-9]{4}-){3}[A-Z2-9]{4}", codes.display(codes.new_code()))


@pytest.mark.parametrize(
    "typed",
    [
        "ABCD-EFGH-JKLM-NPQR",
        "abcd-efgh-jklm-npqr",
        "abcdefghjklmnpqr",
        " ABCD EFGH JKLM NPQR ",
        "AbCd - EfGh - JkLm - NpQr",
        "ABCD\tEFGH\nJKLM NPQR",
    ],
)
def test_case_spaces_and_dashes_do_not_matter(typed):
    assert codes.normalise(typed) == "ABCDEFGHJKLMNPQR"
    assert codes.code_hash(typed) == hash_token("ABCDEFGHJKLMNPQR")


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "ABCD-EFGH-JKLM-NPQ",
        "ABCD-EFGH-JKLM-NPQRS",
        "ABCD-EFGH-JKLM-NPQ0",
        "ABCD-EFGH-JKLM-NPQI",
        "ABCD-EFGH-JKLM-NPQ!",
        "A" * 65,
        "ÀBCD-EFGH-JKLM-NPQR",
    ],
)
def test_what_cannot_be_a_code_is_refused_before_any_lookup(typed):
    with pytest.raises(codes.MalformedCodeError):
        codes.normalise(typed)
    with pytest.raises(codes.MalformedCodeError):
        codes.code_hash(typed)


def test_the_hash_is_not_the_code_and_differs_between_codes():
    code = codes.new_code()
    other = codes.new_code()
    assert code not in codes.code_hash(code) and len(codes.code_hash(code)) == 64
    assert codes.code_hash(code) != codes.code_hash(other)


def test_the_downloaded_text_lists_every_code_once():
    issued = codes.new_codes()
    text = codes.as_text(issued, heading="Recovery codes")
    assert text.startswith("Recovery codes\n\n")
    assert [line for line in text.splitlines()[2:]] == [codes.display(c) for c in issued]
