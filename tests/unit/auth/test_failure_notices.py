"""When wrong answers in a row are worth an email: the 5th, then every 25th, never between."""

from __future__ import annotations

import pytest

from idp.auth.orchestrator import worth_telling


@pytest.mark.parametrize(
    ("failures", "told"),
    [(4, False), (5, True), (6, False), (24, False), (25, True), (26, False), (50, True)],
)
def test_the_fifth_then_every_twenty_fifth(failures, told):
    assert worth_telling(failures) is told
