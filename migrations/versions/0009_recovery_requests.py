"""Account recovery when every factor is lost: requests and operators' approvals

A request is approved by operators (four eyes), then usable after a cooling-off delay through a
one-time link kept hashed. ``open_for`` is unique: at most one open request per practitioner.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 04:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recovery_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=8), nullable=False),
        sa.Column("practitioner_id", sa.Integer(), nullable=False),
        sa.Column("open_for", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("message", sa.String(length=1000), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cooling_off_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("link_token_hash", sa.String(length=64), nullable=True),
        sa.Column("link_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("denied_reason", sa.String(length=300), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["practitioner_id"], ["practitioners.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference"),
        sa.UniqueConstraint("open_for"),
        sa.UniqueConstraint("link_token_hash"),
    )
    op.create_index(
        "ix_recovery_requests_status_created_at", "recovery_requests", ["status", "created_at"]
    )
    op.create_index(
        "ix_recovery_requests_practitioner_created_at",
        "recovery_requests",
        ["practitioner_id", "created_at"],
    )
    op.create_table(
        "recovery_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("operator", sa.String(length=100), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["recovery_requests.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "operator"),
    )


def downgrade() -> None:
    op.drop_table("recovery_approvals")
    op.drop_index("ix_recovery_requests_practitioner_created_at", table_name="recovery_requests")
    op.drop_index("ix_recovery_requests_status_created_at", table_name="recovery_requests")
    op.drop_table("recovery_requests")
