"""Secrets at rest: key derivation, authenticated encryption, password and token hashing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_FORMAT = "v1"


def derive_key(material: str, purpose: str) -> bytes:
    """One 256-bit key per purpose, so a key is never used for two things."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode())
    return hkdf.derive(material.encode())


class DecryptionError(Exception):
    """Ciphertext was altered, or the data key changed."""


class DataCipher:
    """AES-256-GCM with a key derived from IDP_DATA_KEY; ``aad`` binds a value to its row."""

    def __init__(self, data_key: str) -> None:
        self._aead = AESGCM(derive_key(data_key, "idp data at rest v1"))

    def encrypt(self, plaintext: bytes, *, aad: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext, aad.encode())
        return f"{_FORMAT}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, *, aad: str) -> bytes:
        version, _, body = token.partition(".")
        if version != _FORMAT:
            raise DecryptionError("unknown ciphertext format")
        raw = base64.urlsafe_b64decode(body)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], aad.encode())
        except Exception as exc:  # cryptography raises InvalidTag
            raise DecryptionError("cannot decrypt") from exc


class _Lane:
    """The one thread of this process that computes argon2 hashes; the request threads wait
    for it (the GIL released). Hashes run one after the other, so a process holds the memory
    of at most one hash (``IDP_ARGON2_MEMORY_KIB``, 9 MiB by default) whatever its number of
    threads, and each runs in a cache the others do not evict. Under ``idp serve`` the buffer
    is mapped for the hash and returned after it (``idp.wsgi_server.give_back_large_buffers``).

    Made on first use in each process: a worker forked from a process that had hashed gets a
    thread of its own."""

    _lock = threading.Lock()
    _pool: ThreadPoolExecutor | None = None

    @classmethod
    def run(cls, function, *args):
        pool = cls._pool
        if pool is None:
            with cls._lock:
                if cls._pool is None:
                    cls._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2")
                pool = cls._pool
        return pool.submit(function, *args).result()

    @classmethod
    def _forget(cls) -> None:
        cls._lock = threading.Lock()
        cls._pool = None


os.register_at_fork(after_in_child=_Lane._forget)


class Passwords:
    """Password hashing: argon2id with the deployment's parameters (``IDP_ARGON2_*``), computed
    on the process's hashing thread (``_Lane``).

    One per app (``idp.services.passwords``). Unknown accounts are checked against a dummy
    hash made with the same parameters, so a login costs the same whether or not the account
    exists. A hash made with other parameters still verifies; ``needs_rehash`` says it should
    be replaced (the login does, in its own commit)."""

    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._dummy = self.hash(secrets.token_hex(16))

    def hash(self, password: str) -> str:
        return _Lane.run(self._hasher.hash, password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Constant work whether or not the account exists (``stored_hash`` None)."""
        try:
            matched = _Lane.run(self._hasher.verify, stored_hash or self._dummy, password)
        except (VerificationError, InvalidHashError):
            return False
        return matched and bool(stored_hash)

    def needs_rehash(self, stored_hash: str) -> bool:
        """Made with other parameters (or another variant) than this deployment's."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError):
            return True


def hash_token(token: str) -> str:
    """High-entropy tokens (codes, access tokens, session ids, client secrets, recovery codes)
    are stored as SHA-256: with 128 or more random bits (80 for a recovery code) there is
    nothing to guess from a dictionary, so a slow hash would only cost CPU on every request."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
