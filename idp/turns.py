"""One process of the deployment at a time: a turn for background passes beside the app.

A PostgreSQL advisory lock (one number per kind of pass), or a file lock next to a SQLite
database (one file per kind). The passes that find the turn taken skip it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator

from flask import Flask
from sqlalchemy import text


@contextlib.contextmanager
def turn(app: Flask, name: str, key: int) -> Iterator[bool]:
    """True while this process holds the turn ``name`` (advisory lock ``key`` on PostgreSQL);
    False if another process has it."""
    engine = app.extensions["idp.engine"]
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            taken = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": key}
            ).scalar()
            connection.commit()
            try:
                yield bool(taken)
            finally:
                if taken:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()
        return
    settings = app.extensions["idp.settings"]
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    with open(settings.instance_path / f"{name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
