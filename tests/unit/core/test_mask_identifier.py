"""The identifier a second-step page shows: recognisable by its owner, not readable."""

from __future__ import annotations

import pytest

from idp.redaction import mask_identifier


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("10000000009", "100•••••009"),
        ("81012345678", "810•••••678"),
        ("camille.martin@demo.sante.fr", "c•••@demo.sante.fr"),
        ("a@b.fr", "•••@b.fr"),
        ("123456", "1••••6"),
        ("123", "•••"),
        ("", ""),
    ],
)
def test_masked(value, shown):
    assert mask_identifier(value) == shown


@pytest.mark.parametrize("value", ["10000000009", "1234567", "12345", "1234", "1"])
def test_at_least_a_third_is_hidden_and_the_length_kept(value):
    masked = mask_identifier(value)
    assert len(masked) == len(value)
    assert masked.count("•") * 3 >= len(value)


def test_an_email_never_shows_its_local_part():
    assert "martin" not in mask_identifier("camille.martin@demo.sante.fr")
