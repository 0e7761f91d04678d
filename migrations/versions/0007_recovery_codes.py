"""recovery_codes: single-use recovery codes, stored hashed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 04:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recovery_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("practitioner_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["practitioner_id"], ["practitioners.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_hash"),
    )
    op.create_index("ix_recovery_codes_practitioner_id", "recovery_codes", ["practitioner_id"])


def downgrade() -> None:
    op.drop_index("ix_recovery_codes_practitioner_id", table_name="recovery_codes")
    op.drop_table("recovery_codes")
