"""Configuration read from the environment, with safe defaults.

Keys are any string of at least 32 characters (``openssl rand -hex 32``); working keys are
derived from them with HKDF so operators never handle raw key bytes.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from smartcard.protocol import DEFAULT_BRIDGE_PORT

MIN_KEY_LENGTH = 32
DEV_KEYS_FILE = "dev-keys.json"


class ConfigError(Exception):
    """The configuration cannot run safely; the message says what to set."""


SMTP_SECURITY = ("none", "starttls", "tls")


@dataclass
class MailSettings:
    """The SMTP server email is handed to. ``host`` None: mail is off, messages wait queued."""

    host: str | None = None
    port: int = 25
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security: str = "none"
    """``none``, ``starttls`` (upgrade on the plain port) or ``tls`` (TLS from the start)."""
    sender: str = "no-reply@localhost"
    timeout: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.host)


@dataclass
class Settings:
    issuer: str
    database_url: str
    redis_url: str | None
    secret_key: str
    data_key: str
    env: str
    instance_path: Path
    session_idle_seconds: int = 30 * 60
    session_absolute_seconds: int = 12 * 3600
    code_ttl_seconds: int = 60
    access_token_ttl_seconds: int = 600
    id_token_ttl_seconds: int = 600
    issuer_name: str = "IdP Santé"
    webauthn_rp_id: str | None = None
    """Override of the WebAuthn RP ID (default: the issuer's host name)."""
    webauthn_origins: tuple[str, ...] = ()
    """Override of the exact origins accepted in WebAuthn client data (default: the issuer's)."""
    webauthn_aaguids: frozenset[str] | None = None
    """Authenticator models (AAGUIDs) allowed to register; None accepts any model."""
    webauthn_attestation_roots: tuple[bytes, ...] = ()
    """PEM roots an attestation must chain to (e.g. from FIDO MDS) to count as certified."""
    smartcard: object | None = None
    """CPS card trust (an ``idp.factors.smartcard.trust.CardTrust``), filled by the composition
    root through ``idp.factors.smartcard.configure``; None turns card login off."""
    smartcard_bridge_port: int = DEFAULT_BRIDGE_PORT
    """Port of the workstation agent's bridge on 127.0.0.1, as the login page calls it."""
    smartcard_tls_url: str | None = None
    """The card host's ``/login/card/tls`` URL (default: the issuer's own, one proxy host)."""
    trusted_proxies: tuple = ()
    """Reverse proxies whose ``X-Forwarded-For`` names the client (``idp.forwarded``)."""
    time_zone: str = "Europe/Paris"
    """How pages show dates (``IDP_TIME_ZONE``); stored dates stay in UTC."""
    rate_limits: dict = field(default_factory=dict)
    """Operator overrides of named limiters (``IDP_RATE_LIMITS``, ``idp.ratelimit``)."""
    recovery_approvals: int = 2
    """Different operators who must approve an account recovery (``IDP_RECOVERY_APPROVALS``)."""
    recovery_cooling_off_seconds: int = 24 * 3600
    """Delay between the approval and the recovery link working (``IDP_RECOVERY_COOLING_OFF``)."""
    mail: MailSettings = field(default_factory=MailSettings)
    """How email leaves (``IDP_SMTP_*``, ``IDP_MAIL_FROM``); no host: mail stays queued."""
    argon2_time_cost: int = 4
    """Passes over memory of each password hash (``IDP_ARGON2_TIME_COST``)."""
    argon2_memory_kib: int = 9216
    """Memory of each password hash, in KiB (``IDP_ARGON2_MEMORY_KIB``): held by every login
    being checked at once, so multiplied by threads x workers at worst."""
    argon2_parallelism: int = 1
    """Lanes of each password hash (``IDP_ARGON2_PARALLELISM``)."""
    threads: int = 4
    """Request threads of each ``idp serve`` worker (``IDP_THREADS``): sizes the pools."""
    extra: dict = field(default_factory=dict)

    @property
    def is_development(self) -> bool:
        return self.env == "development"

    @property
    def is_https(self) -> bool:
        return self.issuer.startswith("https://")

    @property
    def relying_party_id(self) -> str:
        """WebAuthn RP ID: credentials are scoped to it, so changing it orphans every key."""
        return self.webauthn_rp_id or (urlsplit(self.issuer).hostname or "")

    @property
    def relying_party_origins(self) -> list[str]:
        """Exact origins a WebAuthn response may come from (no wildcard, no suffix match)."""
        return list(self.webauthn_origins) or [origin_of(self.issuer)]


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` as a browser serialises it (default port left out)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"{url!r} is not an http(s) URL")
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{url!r} has an invalid port") from exc
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def parse_port(value: str, *, variable: str, default: int) -> int:
    if not value.strip():
        return default
    if not value.strip().isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"{variable}: {value!r} is not a TCP port")
    return int(value)


def parse_card_host_url(value: str) -> str | None:
    """``IDP_SMARTCARD_TLS_URL``: where the proxy asks for the card (scheme://host[:port]/path)."""
    value = value.strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"IDP_SMARTCARD_TLS_URL: {value!r} must be an http(s) URL without query")
    return value.rstrip("/")


def default_instance_path() -> Path:
    return Path(os.environ.get("IDP_INSTANCE_PATH") or Path.cwd() / "instance").resolve()


def load_dev_keys(instance_path: Path) -> dict[str, str]:
    """Development only: keys generated once and kept in the instance folder."""
    instance_path.mkdir(parents=True, exist_ok=True)
    path = instance_path / DEV_KEYS_FILE
    if path.exists():
        return json.loads(path.read_text())
    keys = {"IDP_SECRET_KEY": secrets.token_hex(32), "IDP_DATA_KEY": secrets.token_hex(32)}
    path.write_text(json.dumps(keys))
    path.chmod(0o600)
    return keys


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    mode = env.get("IDP_ENV", "production")
    instance_path = Path(env.get("IDP_INSTANCE_PATH") or default_instance_path()).resolve()
    if mode == "development":
        for name, value in load_dev_keys(instance_path).items():
            env.setdefault(name, value)
    database_url = env.get("IDP_DATABASE_URL") or f"sqlite:///{instance_path / 'idp.sqlite3'}"
    return Settings(
        issuer=env.get("IDP_ISSUER", "http://localhost:5000").rstrip("/"),
        database_url=database_url,
        redis_url=env.get("IDP_REDIS_URL") or None,
        secret_key=env.get("IDP_SECRET_KEY", ""),
        data_key=env.get("IDP_DATA_KEY", ""),
        env=mode,
        instance_path=instance_path,
        issuer_name=env.get("IDP_DISPLAY_NAME", "IdP Santé"),
        smartcard_bridge_port=parse_port(
            env.get("IDP_SMARTCARD_BRIDGE_PORT", ""),
            variable="IDP_SMARTCARD_BRIDGE_PORT",
            default=DEFAULT_BRIDGE_PORT,
        ),
        smartcard_tls_url=parse_card_host_url(env.get("IDP_SMARTCARD_TLS_URL", "")),
        trusted_proxies=load_trusted_proxies(env),
        rate_limits=load_rate_limits(env),
        time_zone=load_time_zone(env),
        recovery_approvals=load_recovery_approvals(env),
        recovery_cooling_off_seconds=parse_duration(
            env.get("IDP_RECOVERY_COOLING_OFF", ""),
            variable="IDP_RECOVERY_COOLING_OFF",
            default=24 * 3600,
        ),
        mail=load_mail_settings(env, issuer=env.get("IDP_ISSUER", "http://localhost:5000")),
        threads=parse_count(
            env.get("IDP_THREADS", ""), variable="IDP_THREADS", default=Settings.threads
        ),
        **load_argon2(env, development=mode == "development"),
    )


ARGON2_DEFAULTS = {
    "IDP_ARGON2_TIME_COST": Settings.argon2_time_cost,
    "IDP_ARGON2_MEMORY_KIB": Settings.argon2_memory_kib,
    "IDP_ARGON2_PARALLELISM": Settings.argon2_parallelism,
}
ARGON2_FLOOR = 7168 * 5
"""OWASP's weakest equal-strength argon2id setting (m=7168 KiB, t=5, p=1) as memory x passes:
each of its configurations (m=47104/t=1 ... m=7168/t=5) reaches at least this."""


def parse_count(value: str, *, variable: str, default: int) -> int:
    """A whole number of at least 1 (empty: the default)."""
    value = value.strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{variable}: {value!r} is not a whole number of at least 1")
    return int(value)


def load_argon2(env: dict[str, str], *, development: bool) -> dict[str, int]:
    """Password hashing parameters; below OWASP's floor only in development (fast tests)."""
    time_cost, memory_kib, parallelism = (
        parse_count(env.get(name, ""), variable=name, default=default)
        for name, default in ARGON2_DEFAULTS.items()
    )
    if memory_kib < 8 * parallelism:
        raise ConfigError(
            f"IDP_ARGON2_MEMORY_KIB: argon2 needs at least 8 KiB per lane "
            f"({8 * parallelism} KiB for IDP_ARGON2_PARALLELISM={parallelism})"
        )
    if memory_kib * time_cost < ARGON2_FLOOR and not development:
        raise ConfigError(
            f"IDP_ARGON2_MEMORY_KIB x IDP_ARGON2_TIME_COST is {memory_kib} x {time_cost} = "
            f"{memory_kib * time_cost}, below OWASP's minimum of {ARGON2_FLOOR} "
            "(7168 KiB x 5 passes; the default is 9216 KiB x 4). Raise them, or set "
            "IDP_ENV=development."
        )
    return {
        "argon2_time_cost": time_cost,
        "argon2_memory_kib": memory_kib,
        "argon2_parallelism": parallelism,
    }


DEFAULT_SECURITY = {465: "tls", 587: "starttls"}


def load_mail_settings(env: dict[str, str], *, issuer: str) -> MailSettings:
    port = parse_port(env.get("IDP_SMTP_PORT", ""), variable="IDP_SMTP_PORT", default=25)
    security = env.get("IDP_SMTP_SECURITY", "").strip().lower() or DEFAULT_SECURITY.get(
        port, "none"
    )
    if security not in SMTP_SECURITY:
        raise ConfigError(
            f"IDP_SMTP_SECURITY: {security!r} is not one of {', '.join(SMTP_SECURITY)}"
        )
    timeout_text = env.get("IDP_SMTP_TIMEOUT", "").strip() or "10"
    try:
        timeout = float(timeout_text)
    except ValueError:
        timeout = 0.0
    if not 0 < timeout <= 300:
        raise ConfigError(f"IDP_SMTP_TIMEOUT: {timeout_text!r} is not a number of seconds (1-300)")
    host = urlsplit(issuer).hostname or "localhost"
    return MailSettings(
        host=env.get("IDP_SMTP_HOST", "").strip() or None,
        port=port,
        username=env.get("IDP_SMTP_USERNAME") or None,
        password=env.get("IDP_SMTP_PASSWORD") or None,
        security=security,
        sender=env.get("IDP_MAIL_FROM", "").strip() or f"no-reply@{host}",
        timeout=timeout,
    )


def load_recovery_approvals(env: dict[str, str]) -> int:
    value = env.get("IDP_RECOVERY_APPROVALS", "").strip() or "2"
    if value not in ("1", "2"):
        raise ConfigError(f"IDP_RECOVERY_APPROVALS: {value!r} must be 1 or 2")
    return int(value)


DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: str, *, variable: str, default: int) -> int:
    """Seconds, or a number followed by ``s``, ``m``, ``h`` or ``d`` (``24h``)."""
    value = value.strip().lower()
    if not value:
        return default
    number, unit = value.rstrip("smhd"), value[len(value.rstrip("smhd")) :]
    if not number.isdigit() or unit not in DURATION_UNITS:
        raise ConfigError(f"{variable}: {value!r} is not a duration (e.g. 86400, 24h, 2d)")
    return int(number) * DURATION_UNITS[unit]


def load_time_zone(env: dict[str, str]) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = env.get("IDP_TIME_ZONE", "").strip() or "Europe/Paris"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"IDP_TIME_ZONE: {name!r} is not a time zone") from exc
    return name


def load_rate_limits(env: dict[str, str]) -> dict:
    from idp.ratelimit import parse_overrides

    try:
        return parse_overrides(env.get("IDP_RATE_LIMITS", ""))
    except ValueError as exc:
        raise ConfigError(f"IDP_RATE_LIMITS: {exc}") from exc


def load_trusted_proxies(env: dict[str, str]) -> tuple:
    from idp.forwarded import TrustedProxyConfigError, parse_trusted_proxies

    try:
        return parse_trusted_proxies(env.get("IDP_TRUSTED_PROXIES", ""))
    except TrustedProxyConfigError as exc:
        raise ConfigError(str(exc)) from exc


def check_keys(settings: Settings) -> None:
    """Refuse to run with a missing or short key: secrets at rest depend on it.

    Development mode generates keys (``load_dev_keys``), so this holds there too.
    """
    for name, value in (
        ("IDP_SECRET_KEY", settings.secret_key),
        ("IDP_DATA_KEY", settings.data_key),
    ):
        if len(value) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"{name} must be set to at least {MIN_KEY_LENGTH} characters "
                "(for example: openssl rand -hex 32), or set IDP_ENV=development."
            )
