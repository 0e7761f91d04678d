"""audit_events: an index for a practitioner's events of one kind over time

At every completed login the IdP counts the failed attempts on the account since its previous
login (shown on the account page). With this index both lookups read only the practitioner's
recent events of those kinds, however long the trail grows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 15:00:00
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_audit_events_practitioner_event_at",
        "audit_events",
        ["practitioner_id", "event", "at"],
    )


def downgrade() -> None:
    op.drop_index("ix_audit_events_practitioner_event_at", table_name="audit_events")
