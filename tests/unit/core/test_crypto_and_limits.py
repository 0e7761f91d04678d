import pytest

from idp import jsonlimits
from idp.auth import assurance
from idp.config import ConfigError, Settings, check_keys
from idp.crypto import DataCipher, DecryptionError, Passwords


def test_cipher_round_trip_and_binding():
    cipher = DataCipher("k" * 40)
    sealed = cipher.encrypt(b"seed", aad="totp:1")
    assert b"seed" not in sealed.encode()
    assert cipher.decrypt(sealed, aad="totp:1") == b"seed"
    with pytest.raises(DecryptionError):
        cipher.decrypt(sealed, aad="totp:2")
    with pytest.raises(DecryptionError):
        DataCipher("x" * 40).decrypt(sealed, aad="totp:1")
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(DecryptionError):
        cipher.decrypt(tampered, aad="totp:1")


def test_passwords_use_argon2id():
    passwords = Passwords(time_cost=4, memory_kib=9216, parallelism=1)
    stored = passwords.hash("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=9216,t=4,p=1$")
    assert passwords.verify(stored, "correct horse battery")
    assert not passwords.verify(stored, "wrong")
    assert not passwords.verify(None, "anything")
    assert not passwords.verify("", "anything")
    assert not passwords.verify("not a hash", "anything")


def test_short_keys_are_refused(tmp_path):
    settings = Settings(
        issuer="https://idp",
        database_url="sqlite://",
        redis_url=None,
        secret_key="short",
        data_key="d" * 40,
        env="production",
        instance_path=tmp_path,
    )
    with pytest.raises(ConfigError, match="IDP_SECRET_KEY"):
        check_keys(settings)


def test_assurance_ordering():
    assert assurance.satisfies("phrh", ["phr"])
    assert not assurance.satisfies("substantial", ["phr"])
    assert assurance.satisfies("substantial", ["substantial", "phr"])
    assert assurance.satisfies("substantial", [])
    assert assurance.required_level(["phrh", "phr"]) == "phr"


def test_address_limits_are_looser_than_account_limits():
    from idp.ratelimit import limit_of

    assert limit_of("login.ip:10.0.0.1").free == 50
    assert limit_of("login.account:42").free == 10
    assert limit_of("2fa.ip:::1").free == 50
    assert limit_of("login.ip:10.0.0.1").ceiling is None
    assert limit_of("login.account:42").ceiling == 100


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"a":' * 10_000 + "1" + "}" * 10_000,
        b"[" * 40 + b"]" * 40,
        b'{"a": "\xff"}',
        b"x" * 2_000,
        "not json",
        '{"unterminated": "',
        '{"transports": ["usb\\u0000"]}',
    ],
    ids=["deep-list", "deep-object", "over-limit", "not-utf8", "too-big", "text", "cut", "nul"],
)
def test_json_limits_refuse_without_crashing(raw):
    with pytest.raises(jsonlimits.JSONLimitError):
        jsonlimits.loads(raw, max_bytes=1024 * 1024 if len(raw) > 2_000 else 1_000)


def test_json_limits_ignore_brackets_inside_strings():
    text = '{"k": "' + "[" * 100 + '", "v": [[1]]}'
    assert jsonlimits.nesting_depth(text) == 3
    assert jsonlimits.loads(text, max_bytes=1_000, max_depth=3)["v"] == [[1]]
    with pytest.raises(jsonlimits.JSONLimitError):
        jsonlimits.check_depth({"a": [[[1]]]}, max_depth=3)
    jsonlimits.check_depth({"a": [[1]]}, max_depth=3)


def test_operators_override_named_limits_within_the_nist_ceiling():
    from idp.config import ConfigError, load_settings
    from idp.ratelimit import configured, parse_overrides

    overrides = parse_overrides("login.ip=200, login.account=3/20")
    limits = configured(overrides)
    assert limits["login.ip"].free == 200 and limits["login.ip"].ceiling is None
    assert (limits["login.account"].free, limits["login.account"].ceiling) == (3, 20)
    assert limits["2fa.ip"] == configured({})["2fa.ip"]  # the others keep their defaults
    edge = configured(parse_overrides("login.account=5/100, 2fa.account=3/3"))
    assert edge["login.account"].ceiling == 100 and edge["2fa.account"].ceiling == 3  # allowed
    for bad in ("login.user=3", "login.ip=many", "login.account=5/101", "login.account=9/3"):
        with pytest.raises(ValueError):
            parse_overrides(bad)
    with pytest.raises(ConfigError, match="IDP_RATE_LIMITS"):
        load_settings({"IDP_RATE_LIMITS": "login.user=3"})
