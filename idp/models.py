"""Database models (SQLAlchemy 2.0). The schema changes only through Alembic migrations."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Stores aware UTC datetimes and always returns them aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    pass


def new_subject() -> str:
    return uuid.uuid4().hex


class PractitionerStatus:
    INVITED = "invited"
    ACTIVE = "active"
    LOCKED = "locked"
    DISABLED = "disabled"
    ALL = (INVITED, ACTIVE, LOCKED, DISABLED)


class Practitioner(Base):
    __tablename__ = "practitioners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(32), unique=True, default=new_subject)
    rpps: Mapped[str] = mapped_column(String(11), unique=True)
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    profession_code: Mapped[str] = mapped_column(String(4))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=PractitionerStatus.INVITED)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # WebAuthn user.id: random and opaque (no RPPS, no e-mail), made at the first registration.
    webauthn_user_handle: Mapped[bytes | None] = mapped_column(
        LargeBinary(64), unique=True, index=True
    )
    # The language of the emails sent to them: the page's language at their last login.
    language: Mapped[str] = mapped_column(String(8), default="fr", server_default="fr")
    # "This wasn't me": the next login must choose a new password before anything else.
    password_change_required: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=sa_false()
    )

    totp_devices: Mapped[list[TotpDevice]] = relationship(back_populates="practitioner")

    def get_user_id(self) -> int:  # Authlib
        return self.id


class TotpDevice(Base):
    __tablename__ = "totp_devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_used_step: Mapped[int | None] = mapped_column(BigInteger)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    practitioner: Mapped[Practitioner] = relationship(back_populates="totp_devices")

    @property
    def is_active(self) -> bool:
        return self.confirmed_at is not None and self.removed_at is None


class Invitation(Base):
    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)  # prune
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class OAuthClient(Base):
    __tablename__ = "oauth_clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    client_secret_hash: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    redirect_uris_json: Mapped[str] = mapped_column(Text, default="[]")
    scope: Mapped[str] = mapped_column(Text, default="openid profile email rpps")
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    id_token_signed_response_alg: Mapped[str] = mapped_column(String(8), default="RS256")
    require_consent: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    # --- Authlib ClientMixin ---
    @property
    def redirect_uris(self) -> list[str]:
        return json.loads(self.redirect_uris_json)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # Only unambiguous when exactly one URI is registered (OIDC requires redirect_uri anyway).
        uris = self.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact string match, no normalisation

    def check_client_secret(self, client_secret: str) -> bool:
        from idp.crypto import hash_token, tokens_equal

        if not self.client_secret_hash or not client_secret:
            return False
        return tokens_equal(self.client_secret_hash, hash_token(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"

    @property
    def client_metadata(self) -> dict:
        return {"id_token_signed_response_alg": self.id_token_signed_response_alg}


class Consent(Base):
    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("practitioner_id", "client_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"))
    client_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AuthorizationCode(Base):
    __tablename__ = "authorization_codes"
    __table_args__ = (
        # the nonce check of every /authorize (only codes that carry a nonce)
        Index(
            "ix_authorization_codes_client_nonce",
            "client_id",
            "nonce",
            postgresql_where=text("nonce IS NOT NULL"),
            sqlite_where=text("nonce IS NOT NULL"),
        ),
        # the nonce check's window and the prune
        Index("ix_authorization_codes_issued_at", "issued_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    nonce: Mapped[str | None] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))
    auth_time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[str] = mapped_column(String(100))
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    # --- Authlib AuthorizationCodeMixin / OIDC code model ---
    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return int(self.auth_time.timestamp())

    def get_acr(self) -> str:
        return self.acr

    def get_amr(self) -> list[str]:
        return self.amr.split()


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"), index=True)
    authorization_code_id: Mapped[int | None] = mapped_column(
        ForeignKey("authorization_codes.id"), index=True
    )
    scope: Mapped[str] = mapped_column(Text)
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[str] = mapped_column(String(100))
    auth_time: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        # the account page: a practitioner's last token for each application
        Index("ix_tokens_practitioner_client_issued", "practitioner_id", "client_id", "issued_at"),
        # the prune
        Index("ix_tokens_expires_at", "expires_at"),
    )


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    kty: Mapped[str] = mapped_column(String(8))
    private_jwk_encrypted: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class WebSession(Base):
    __tablename__ = "web_sessions"
    __table_args__ = (
        # the prune: idle and absolute limits
        Index("ix_web_sessions_last_seen_at", "last_seen_at"),
        Index("ix_web_sessions_created_at", "created_at"),
    )

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[str] = mapped_column(Text)
    practitioner_id: Mapped[int | None] = mapped_column(Integer, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    # where the login was made from, shown on the account page (written at each login step)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))


class ThrottleCounter(Base):
    __tablename__ = "throttle_counters"
    __table_args__ = (Index("ix_throttle_counters_last_failure_at", "last_failure_at"),)  # prune

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    blocked_until: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """Append-only: the migrations install triggers that refuse UPDATE, DELETE and TRUNCATE."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # a practitioner's events of one kind over time (failed attempts since the last login)
        Index("ix_audit_events_practitioner_event_at", "practitioner_id", "event", "at"),
        # the account's security history, newest first, a page at a time
        Index("ix_audit_events_practitioner_newest", "practitioner_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    event: Mapped[str] = mapped_column(String(100), index=True)
    # no index of its own: the two composite indexes above start with it
    practitioner_id: Mapped[int | None] = mapped_column(Integer)
    client_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    details_json: Mapped[str] = mapped_column(Text, default="{}")

    @property
    def details(self) -> dict:
        return json.loads(self.details_json)


class WebAuthnCredential(Base):
    """A security key or passkey (WA-04). Never deleted: removal and clone flags are dated
    (NIST-12), and a removed credential id stays taken (WA-03)."""

    __tablename__ = "webauthn_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"), index=True)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1023), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary())
    sign_count: Mapped[int] = mapped_column(BigInteger)
    aaguid: Mapped[str] = mapped_column(String(36))
    transports: Mapped[str] = mapped_column(String(200), default="")
    backup_eligible: Mapped[bool] = mapped_column(Boolean)
    backup_state: Mapped[bool] = mapped_column(Boolean)
    hardware_bound: Mapped[bool] = mapped_column(Boolean)
    attestation_fmt: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_ip: Mapped[str | None] = mapped_column(String(64))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    flagged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    @property
    def is_usable(self) -> bool:
        return self.removed_at is None and self.flagged_at is None


class AuthChallenge(Base):
    """A single-use, expiring challenge for any factor ceremony (WebAuthn, smart card).

    The id goes into the browser session; ``idp.challenges.consume`` claims the row in one
    UPDATE before anything is verified.
    """

    __tablename__ = "auth_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(64))
    practitioner_id: Mapped[int | None] = mapped_column(ForeignKey("practitioners.id"), index=True)
    challenge: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Smartcard(Base):
    """A CPS card enrolled on first use (its authentication certificate, never a key).

    Never deleted: a removed card stays here so the same certificate is refused, not enrolled
    again (NIST-12).
    """

    __tablename__ = "smartcards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"), index=True)
    fingerprint_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    id_nat: Mapped[str] = mapped_column(String(32))
    issuer_dn: Mapped[str] = mapped_column(String(500))
    serial: Mapped[str] = mapped_column(String(64))
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    removed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class SmartcardLogin(Base):
    """One card login transaction, shown on one login page and bound to its browser session.

    ``challenge_id`` names the single-use challenge in ``auth_challenges`` (no foreign key:
    expired challenges are purged on their own). The agent, the page or the card host completes
    the row once; the session that started it consumes it once.
    """

    __tablename__ = "smartcard_logins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction: Mapped[str] = mapped_column(String(64), unique=True)
    challenge_id: Mapped[str] = mapped_column(String(64))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    method: Mapped[str | None] = mapped_column(String(16))
    practitioner_id: Mapped[int | None] = mapped_column(ForeignKey("practitioners.id"))
    smartcard_id: Mapped[int | None] = mapped_column(ForeignKey("smartcards.id"))
    result_hash: Mapped[str | None] = mapped_column(String(64))
    failure: Mapped[str | None] = mapped_column(String(64))
    consumed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class CrlCacheEntry(Base):
    """CRLs shared by every server process when Redis is not configured (card trust)."""

    __tablename__ = "crl_cache"

    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    der: Mapped[bytes] = mapped_column(LargeBinary())
    fetched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


# --- account recovery (every factor lost)


class RecoveryStatus:
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    EXPIRED = "expired"
    OPEN = (PENDING, APPROVED)
    ALL = (PENDING, APPROVED, DENIED, CANCELLED, COMPLETED, EXPIRED)


class RecoveryRequest(Base):
    """A practitioner who lost every factor asks for their account back.

    Approved by operators (four eyes) then usable only after a cooling-off delay, through a
    one-time link (its hash only). ``open_for`` holds the practitioner's id while the request
    is open and NULL once it is closed: its unique index keeps at most one open request per
    practitioner, even for two filings at the same instant.
    """

    __tablename__ = "recovery_requests"
    __table_args__ = (
        Index("ix_recovery_requests_status_created_at", "status", "created_at"),
        Index("ix_recovery_requests_practitioner_created_at", "practitioner_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(8), unique=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"))
    open_for: Mapped[int | None] = mapped_column(Integer, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    message: Mapped[str | None] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16), default=RecoveryStatus.PENDING)
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    cooling_off_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    link_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    link_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(100))
    denied_reason: Mapped[str | None] = mapped_column(String(300))
    cancelled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class RecoveryApproval(Base):
    """One operator's approval of one recovery request (never twice by the same operator)."""

    __tablename__ = "recovery_approvals"
    __table_args__ = (UniqueConstraint("request_id", "operator"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("recovery_requests.id"))
    operator: Mapped[str] = mapped_column(String(100))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


# --- password reset


class PasswordReset(Base):
    """A "Forgot your password?" link: emailed, valid one hour, used once, and never enough
    alone (the practitioner still proves one of their factors before choosing a password)."""

    __tablename__ = "password_resets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)  # prune
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


# --- mail


class OutboxMessage(Base):
    """An email waiting to be sent (``idp.mail``), queued in the unit of work that caused it.

    The bodies are encrypted with the data key and bound to the row (``idp.mail.outbox``):
    an invitation, a password reset or a recovery carries its link. Once the message is sent
    they are cleared; the row stays, with its subject and ``sent_at``, as the record of what
    was sent. ``next_attempt_at`` is None once the message is sent or given up."""

    __tablename__ = "mail_outbox"
    __table_args__ = (Index("ix_mail_outbox_due", "sent_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    text_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(200))


# --- recovery codes


class RecoveryCode(Base):
    """One single-use recovery code of a practitioner, stored as its SHA-256 only.

    A practitioner holds one set (ten codes) at a time: generating a new set marks every unused
    code of the old one used. A code is consumed by one conditional UPDATE (``used_at IS NULL``).
    """

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    practitioner_id: Mapped[int] = mapped_column(ForeignKey("practitioners.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
