"""The PostgreSQL role the server runs as, with the least it needs.

Migrations run as the owner of the tables. The server connects as another role that may read and
write the ordinary tables but only add to and read ``audit_events``: it cannot change or remove
an audit event, empty the table, or disable, drop or replace its triggers, all of which belong
to the owner alone.

The statements are derived from the models, which the migrations match exactly, and name every
table explicitly; there are no default privileges. A table that a later migration adds is
therefore out of the server's reach until ``idp db grants --role NAME --apply`` is run again
after ``idp db upgrade``: the server fails loudly on it rather than getting rights nobody
decided on.
"""

from __future__ import annotations

from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import make_url

from idp.db import normalise_url
from idp.models import Base

#: Tables whose rows are never changed once written: the server may only add and read.
APPEND_ONLY = {"audit_events": ("SELECT", "INSERT")}
ORDINARY = ("SELECT", "INSERT", "UPDATE", "DELETE")
#: Alembic's bookkeeping: the owner's business only.
OWNER_ONLY = ("alembic_version",)


class GrantsError(Exception):
    """The grants cannot be printed or applied; the message says why, for the operator."""


def is_postgresql(url: str) -> bool:
    return make_url(normalise_url(url)).get_backend_name() == "postgresql"


def quote_identifier(name: str) -> str:
    if not name or "\x00" in name or len(name.encode()) > 63:
        raise GrantsError(f"not a valid role name: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def sequences(metadata: MetaData) -> list[str]:
    """The sequences behind integer primary keys (PostgreSQL's ``SERIAL`` naming)."""
    return [
        f"{table.name}_{table.autoincrement_column.name}_seq"
        for table in metadata.sorted_tables
        if table.autoincrement_column is not None
    ]


def grant_statements(role: str, metadata: MetaData = Base.metadata) -> list[str]:
    """Everything is revoked, then granted again: running them twice changes nothing."""
    who = quote_identifier(role)
    tables = [table.name for table in metadata.sorted_tables]
    serials = sequences(metadata)
    statements = [
        f"REVOKE ALL ON TABLE {', '.join([*tables, *OWNER_ONLY])} FROM {who}",
        f"REVOKE ALL ON SEQUENCE {', '.join(serials)} FROM {who}",
    ]
    for table in tables:
        privileges = APPEND_ONLY.get(table, ORDINARY)
        statements.append(f"GRANT {', '.join(privileges)} ON TABLE {table} TO {who}")
    statements.append(f"GRANT USAGE ON SEQUENCE {', '.join(serials)} TO {who}")
    return statements


def apply_grants(url: str, role: str, metadata: MetaData = Base.metadata) -> list[str]:
    """Run the statements in one transaction, connected as the owner of the tables."""
    statements = grant_statements(role, metadata)
    engine = create_engine(normalise_url(url))
    try:
        with engine.begin() as connection:
            _check_roles(connection, role)
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()
    return statements


def _check_roles(connection, role: str) -> None:
    owner = connection.execute(
        text(
            "SELECT tableowner FROM pg_tables "
            "WHERE schemaname = current_schema() AND tablename = 'audit_events'"
        )
    ).scalar()
    if owner is None:
        raise GrantsError("the database has no audit_events table: run `idp db upgrade` first")
    me = connection.execute(
        text(
            "SELECT current_user, rolsuper OR pg_has_role(current_user, :owner, 'USAGE') "
            "FROM pg_roles WHERE rolname = current_user"
        ),
        {"owner": owner},
    ).one()
    if not me[1]:
        raise GrantsError(
            f"connected as {me[0]}, which does not own the tables: "
            f"set IDP_DATABASE_URL to the owner's account ({owner})"
        )
    target = connection.execute(
        text(
            "SELECT rolsuper, pg_has_role(rolname, :owner, 'MEMBER') "
            "FROM pg_roles WHERE rolname = :role"
        ),
        {"owner": owner, "role": role},
    ).one_or_none()
    if target is None:
        raise GrantsError(f"role {role} does not exist: create it first (CREATE ROLE … LOGIN)")
    superuser, owns = target
    if superuser:
        raise GrantsError(f"role {role} is a superuser: grants cannot restrict it")
    if owns:
        raise GrantsError(
            f"role {role} is the owner of the tables ({owner}) or a member of it: "
            "the server needs a role of its own"
        )
