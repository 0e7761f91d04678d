"""Client registration: exact redirect URIs, hashed secrets; the per-process client cache."""

from __future__ import annotations

import json
import secrets
import threading
import weakref
from collections.abc import Callable
from urllib.parse import urlsplit

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from idp import audit
from idp.clock import Clock
from idp.crypto import hash_token
from idp.models import OAuthClient
from idp.oauth.claims import SCOPES_SUPPORTED
from idp.oauth.keys import ALGORITHMS
from idp.services import clock

CLIENT_CACHE_SECONDS = 10.0
"""How long a process trusts what it read of a client: a change made by another process (a
new secret, a removed redirect URI) applies within this delay; one made here, at once."""

LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


class ClientRegistrationError(ValueError):
    pass


def validate_redirect_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        raise ClientRegistrationError(f"redirect URI must not have a fragment: {uri}")
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return uri
    raise ClientRegistrationError(f"redirect URI must be https (or http on loopback): {uri}")


def register_client(
    db: Session,
    *,
    name: str,
    redirect_uris: list[str],
    public: bool = False,
    auth_method: str = "client_secret_basic",
    id_token_alg: str = "RS256",
    scope: str = "openid profile email rpps",
    require_consent: bool = True,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> tuple[OAuthClient, str | None]:
    """Returns the client and its secret: the only time the secret is visible."""
    if not name.strip():
        raise ClientRegistrationError("a client name is required")
    if not redirect_uris:
        raise ClientRegistrationError("at least one redirect URI is required")
    uris = [validate_redirect_uri(uri) for uri in redirect_uris]
    if id_token_alg not in ALGORITHMS:
        raise ClientRegistrationError(f"unsupported ID token algorithm {id_token_alg}")
    unknown = set(scope.split()) - set(SCOPES_SUPPORTED)
    if unknown or "openid" not in scope.split():
        raise ClientRegistrationError(f"scope must include openid; unknown: {sorted(unknown)}")
    secret = None if public else (client_secret or secrets.token_urlsafe(32))
    client = OAuthClient(
        client_id=client_id or secrets.token_urlsafe(16),
        client_secret_hash=hash_token(secret) if secret else None,
        name=name.strip(),
        redirect_uris_json=json.dumps(uris),
        scope=scope,
        token_endpoint_auth_method="none" if public else auth_method,
        id_token_signed_response_alg=id_token_alg,
        require_consent=require_consent,
        created_at=clock().now(),
    )
    if db.execute(select(OAuthClient).where(OAuthClient.client_id == client.client_id)).first():
        raise ClientRegistrationError(f"client {client.client_id} already exists")
    db.add(client)
    audit.record(db, "oauth:client:registered", client_id=client.client_id)
    db.commit()
    return client, secret


class ClientCache:
    """Clients as this process last read them, each for ``CLIENT_CACHE_SECONDS``.

    The cached objects are detached from any database session and only read (Authlib's
    client checks). A client unknown is never cached: a new registration is found at once."""

    _caches: weakref.WeakSet[ClientCache] = weakref.WeakSet()

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, OAuthClient]] = {}
        ClientCache._caches.add(self)

    def get(self, session: Callable[[], Session], client_id: str) -> OAuthClient | None:
        """``session`` is called on a miss only: a hit opens no database session."""
        now = self._clock.now().timestamp()
        entry = self._entries.get(client_id)
        if entry is not None and now - entry[0] < CLIENT_CACHE_SECONDS:
            return entry[1]
        db = session()
        client = db.execute(
            select(OAuthClient).where(OAuthClient.client_id == client_id)
        ).scalar_one_or_none()
        if client is None:
            self._entries.pop(client_id, None)
            return None
        db.expunge(client)
        with self._lock:
            self._entries[client_id] = (now, client)
        return client

    @classmethod
    def forget_all(cls, *_args) -> None:
        for cache in list(cls._caches):
            with cache._lock:
                cache._entries.clear()


for _change in ("after_insert", "after_update", "after_delete"):
    event.listen(OAuthClient, _change, ClientCache.forget_all)
