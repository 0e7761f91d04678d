"""CPS smart cards: enrolled cards, card login transactions, and the shared CRL cache

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 20:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "smartcards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practitioner_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(length=64), nullable=False),
        sa.Column("id_nat", sa.String(length=32), nullable=False),
        sa.Column("issuer_dn", sa.String(length=500), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["practitioner_id"], ["practitioners.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint_sha256"),
    )
    op.create_index("ix_smartcards_practitioner_id", "smartcards", ["practitioner_id"])

    # challenge_id has no foreign key on purpose: expired challenges are purged on their own.
    op.create_table(
        "smartcard_logins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transaction", sa.String(length=64), nullable=False),
        sa.Column("challenge_id", sa.String(length=64), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("method", sa.String(length=16), nullable=True),
        sa.Column("practitioner_id", sa.Integer(), nullable=True),
        sa.Column("smartcard_id", sa.Integer(), nullable=True),
        sa.Column("result_hash", sa.String(length=64), nullable=True),
        sa.Column("failure", sa.String(length=64), nullable=True),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["practitioner_id"], ["practitioners.id"]),
        sa.ForeignKeyConstraint(["smartcard_id"], ["smartcards.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("transaction"),
        sa.UniqueConstraint("code_hash"),
    )
    op.create_index("ix_smartcard_logins_expires_at", "smartcard_logins", ["expires_at"])

    op.create_table(
        "crl_cache",
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("url"),
    )


def downgrade() -> None:
    op.drop_table("crl_cache")
    op.drop_index("ix_smartcard_logins_expires_at", table_name="smartcard_logins")
    op.drop_table("smartcard_logins")
    op.drop_index("ix_smartcards_practitioner_id", table_name="smartcards")
    op.drop_table("smartcards")
