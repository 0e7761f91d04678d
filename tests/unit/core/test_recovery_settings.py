"""The account recovery's settings: how many operators approve, how long the delay runs."""

from __future__ import annotations

import pytest

from idp.config import ConfigError, load_settings


def settings_with(tmp_path, **env):
    return load_settings({"IDP_INSTANCE_PATH": str(tmp_path), **env})


def test_defaults_are_four_eyes_and_a_day(tmp_path):
    settings = settings_with(tmp_path)
    assert settings.recovery_approvals == 2
    assert settings.recovery_cooling_off_seconds == 86400


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3600", 3600), ("90s", 90), ("30m", 1800), ("48h", 172800), ("2d", 172800), ("0", 0)],
)
def test_cooling_off_in_seconds_or_with_a_unit(tmp_path, value, seconds):
    cooling_off = settings_with(tmp_path, IDP_RECOVERY_COOLING_OFF=value)
    assert cooling_off.recovery_cooling_off_seconds == seconds


@pytest.mark.parametrize("value", ["24 hours", "-1", "1.5h", "h", "3w"])
def test_a_bad_cooling_off_stops_the_start(tmp_path, value):
    with pytest.raises(ConfigError, match="IDP_RECOVERY_COOLING_OFF"):
        settings_with(tmp_path, IDP_RECOVERY_COOLING_OFF=value)


def test_one_or_two_approvals_only(tmp_path):
    assert settings_with(tmp_path, IDP_RECOVERY_APPROVALS="1").recovery_approvals == 1
    for value in ("0", "3", "two"):
        with pytest.raises(ConfigError, match="IDP_RECOVERY_APPROVALS"):
            settings_with(tmp_path, IDP_RECOVERY_APPROVALS=value)
