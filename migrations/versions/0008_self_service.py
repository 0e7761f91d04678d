"""Self-service account page: where each session signed in from, a forced password change,
and the indexes the page reads through

- ``web_sessions.ip`` and ``user_agent``: written at each login step, shown in the list of the
  practitioner's sessions (read through the existing index on ``practitioner_id``);
- ``practitioners.password_change_required``: set by "This wasn't me", cleared by a new
  password; until then the account reaches nothing else;
- ``tokens (practitioner_id, client_id, issued_at)``: the last token of each connected
  application;
- ``audit_events (practitioner_id, id)``: the security history, newest first, a page at a time.

``web_sessions.practitioner_id`` was left empty until now (the store read the wrong key): it is
filled in here from each open session's data, so that "Sign out everywhere" and "This wasn't
me" reach the sessions opened before the upgrade too.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 04:30:00
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("web_sessions", sa.Column("ip", sa.String(64), nullable=True))
    op.add_column("web_sessions", sa.Column("user_agent", sa.String(300), nullable=True))
    op.add_column(
        "practitioners",
        sa.Column(
            "password_change_required", sa.Boolean(), nullable=False, server_default=sa.false()
        ),
    )
    sessions = sa.table(
        "web_sessions",
        sa.column("id_hash", sa.String),
        sa.column("data", sa.Text),
        sa.column("practitioner_id", sa.Integer),
    )
    conn = op.get_bind()
    for id_hash, data in conn.execute(sa.select(sessions.c.id_hash, sessions.c.data)).all():
        owner = _owner(data)
        if owner is not None:
            conn.execute(
                sessions.update().where(sessions.c.id_hash == id_hash).values(practitioner_id=owner)
            )
    op.create_index(
        "ix_tokens_practitioner_client_issued",
        "tokens",
        ["practitioner_id", "client_id", "issued_at"],
    )
    op.create_index(
        "ix_audit_events_practitioner_newest", "audit_events", ["practitioner_id", "id"]
    )


def _owner(data: str) -> int | None:
    """The practitioner of a session's completed login (``idp.auth.flow``), as the store reads
    it now."""
    try:
        completed = json.loads(data).get("auth")
    except (ValueError, AttributeError):
        return None
    owner = completed.get("practitioner_id") if isinstance(completed, dict) else None
    return owner if isinstance(owner, int) and not isinstance(owner, bool) else None


def downgrade() -> None:
    op.drop_index("ix_audit_events_practitioner_newest", table_name="audit_events")
    op.drop_index("ix_tokens_practitioner_client_issued", table_name="tokens")
    with op.batch_alter_table("practitioners") as batch:
        batch.drop_column("password_change_required")
    with op.batch_alter_table("web_sessions") as batch:
        batch.drop_column("user_agent")
        batch.drop_column("ip")
