"""growth: indexes for the nonce check and for the housekeeping prune

The nonce check of every /authorize looks codes up by (client_id, nonce), only among codes
that carry a nonce, and only among those still young enough to be kept (``issued_at``). The
prune (``idp.housekeeping``) finds what expired by one indexed column per table.

``ix_audit_events_practitioner_id`` is dropped: the two composite indexes that start with
``practitioner_id`` (by event and time, newest first) serve every query by practitioner, and
each audit insert (every login step) no longer maintains a third index.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 15:15:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

NONCE_PRESENT = sa.text("nonce IS NOT NULL")

# (table, index name, columns)
PLAIN = (
    ("authorization_codes", "ix_authorization_codes_issued_at", ["issued_at"]),
    ("tokens", "ix_tokens_expires_at", ["expires_at"]),
    ("web_sessions", "ix_web_sessions_last_seen_at", ["last_seen_at"]),
    ("web_sessions", "ix_web_sessions_created_at", ["created_at"]),
    ("throttle_counters", "ix_throttle_counters_last_failure_at", ["last_failure_at"]),
    ("password_resets", "ix_password_resets_expires_at", ["expires_at"]),
    ("invitations", "ix_invitations_expires_at", ["expires_at"]),
)


def upgrade() -> None:
    op.create_index(
        "ix_authorization_codes_client_nonce",
        "authorization_codes",
        ["client_id", "nonce"],
        postgresql_where=NONCE_PRESENT,
        sqlite_where=NONCE_PRESENT,
    )
    for table, name, columns in PLAIN:
        op.create_index(name, table, columns)
    op.drop_index("ix_audit_events_practitioner_id", table_name="audit_events")


def downgrade() -> None:
    op.create_index("ix_audit_events_practitioner_id", "audit_events", ["practitioner_id"])
    for table, name, _columns in reversed(PLAIN):
        op.drop_index(name, table_name=table)
    op.drop_index("ix_authorization_codes_client_nonce", table_name="authorization_codes")
