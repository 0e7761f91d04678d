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

MIN_KEY_LENGTH = 32
DEV_KEYS_FILE = "dev-keys.json"


class ConfigError(Exception):
    """The configuration cannot run safely; the message says what to set."""


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
    extra: dict = field(default_factory=dict)

    @property
    def is_development(self) -> bool:
        return self.env == "development"

    @property
    def is_https(self) -> bool:
        return self.issuer.startswith("https://")


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
    )


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
