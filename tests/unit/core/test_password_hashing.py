"""Password hashing parameters: read from the environment, refused below OWASP's floor outside
development, and one hasher whose dummy hash (unknown accounts) costs what a real one does."""

from __future__ import annotations

import statistics
import time

import pytest
from argon2 import PasswordHasher

from idp.config import ConfigError, load_settings
from idp.crypto import Passwords


def argon2_settings(tmp_path, env: str = "production", **variables: str) -> tuple[int, int, int]:
    settings = load_settings({"IDP_ENV": env, "IDP_INSTANCE_PATH": str(tmp_path), **variables})
    return settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism


def test_the_default_is_owasps_9_mib_4_passes_one_lane(tmp_path):
    assert argon2_settings(tmp_path) == (4, 9216, 1)


def test_the_parameters_are_read_from_the_environment(tmp_path):
    assert argon2_settings(
        tmp_path,
        IDP_ARGON2_TIME_COST="2",
        IDP_ARGON2_MEMORY_KIB="19456",
        IDP_ARGON2_PARALLELISM="2",
    ) == (2, 19456, 2)


def test_owasps_weakest_setting_is_the_floor(tmp_path):
    at_floor = {"IDP_ARGON2_TIME_COST": "5", "IDP_ARGON2_MEMORY_KIB": "7168"}
    assert argon2_settings(tmp_path, **at_floor) == (5, 7168, 1)
    with pytest.raises(ConfigError) as refused:
        argon2_settings(tmp_path, IDP_ARGON2_TIME_COST="5", IDP_ARGON2_MEMORY_KIB="7167")
    assert str(refused.value) == (
        "IDP_ARGON2_MEMORY_KIB x IDP_ARGON2_TIME_COST is 7167 x 5 = 35835, below OWASP's "
        "minimum of 35840 (7168 KiB x 5 passes; the default is 9216 KiB x 4). Raise them, "
        "or set IDP_ENV=development."
    )
    with pytest.raises(ConfigError, match="= 9216, below OWASP's minimum of 35840"):
        argon2_settings(tmp_path, IDP_ARGON2_TIME_COST="1")


def test_development_may_go_below_the_floor(tmp_path):
    cheap = {"IDP_ARGON2_TIME_COST": "1", "IDP_ARGON2_MEMORY_KIB": "64"}
    assert argon2_settings(tmp_path, env="development", **cheap) == (1, 64, 1)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("IDP_ARGON2_PARALLELISM", "0", "IDP_ARGON2_PARALLELISM: '0' is not a whole number"),
        ("IDP_ARGON2_TIME_COST", "0", "IDP_ARGON2_TIME_COST: '0' is not a whole number"),
        ("IDP_ARGON2_MEMORY_KIB", "9 MiB", "IDP_ARGON2_MEMORY_KIB: '9 MiB' is not a whole"),
        ("IDP_ARGON2_MEMORY_KIB", "-9216", "IDP_ARGON2_MEMORY_KIB: '-9216' is not a whole"),
    ],
)
def test_nonsense_is_refused_even_in_development(tmp_path, variable, value, message):
    with pytest.raises(ConfigError, match=message):
        argon2_settings(tmp_path, env="development", **{variable: value})


def test_argon2s_own_minimum_of_8_kib_a_lane_is_refused_even_in_development(tmp_path):
    lanes = {"IDP_ARGON2_PARALLELISM": "4", "IDP_ARGON2_TIME_COST": "1"}
    assert argon2_settings(tmp_path, env="development", IDP_ARGON2_MEMORY_KIB="32", **lanes)
    with pytest.raises(ConfigError, match=r"at least 8 KiB per lane \(32 KiB for"):
        argon2_settings(tmp_path, env="development", IDP_ARGON2_MEMORY_KIB="31", **lanes)


def test_a_hash_with_other_parameters_needs_rehashing():
    passwords = Passwords(time_cost=4, memory_kib=9216, parallelism=1)
    assert not passwords.needs_rehash(passwords.hash("correct horse battery"))
    library_default = PasswordHasher().hash("correct horse battery")  # t=3, m=65536, p=4
    assert library_default.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert passwords.needs_rehash(library_default)
    assert passwords.verify(library_default, "correct horse battery")  # still accepted
    assert passwords.needs_rehash(
        Passwords(time_cost=5, memory_kib=9216, parallelism=1).hash("correct horse battery")
    )


def cpu_ms(check, runs: int = 7) -> float:
    spent = []
    for _ in range(runs):
        start = time.process_time()
        check()
        spent.append(time.process_time() - start)
    return statistics.median(spent) * 1000


def test_an_unknown_account_costs_what_a_wrong_password_does():
    """The dummy hash is made with the deployment's parameters: with the library's defaults
    (about ten times the work of the ones below) an unknown identifier would stand out."""
    passwords = Passwords(time_cost=4, memory_kib=9216, parallelism=1)
    stored = passwords.hash("correct horse battery")
    unknown = cpu_ms(lambda: passwords.verify(None, "guess"))
    wrong = cpu_ms(lambda: passwords.verify(stored, "guess"))
    assert 0.6 < unknown / wrong < 1.6, (unknown, wrong)
