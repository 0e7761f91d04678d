"""audit_events: PostgreSQL refuses TRUNCATE too

The row triggers of 0001 refuse UPDATE and DELETE, but TRUNCATE fires no row trigger: it needs a
statement trigger of its own. SQLite has no TRUNCATE; a DELETE without WHERE still fires its
row trigger there (the truncate optimisation is off on tables with triggers).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:00:00
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Same function as the row trigger: it raises before anything is removed.
    op.execute(
        """CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"""
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER audit_events_no_truncate ON audit_events")
