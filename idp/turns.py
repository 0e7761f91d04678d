"""One process of the deployment at a time: a turn for background passes beside the app.

A PostgreSQL advisory lock (one number per kind of pass), or a file lock next to a SQLite
database (one file per kind). The passes that find the turn taken skip it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
from collections.abc import Callable, Iterator

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


class Background:
    """A pass repeated every ``interval`` seconds on a daemon thread of this process, beside
    the app (never inside a request) and never fatal: a failure is logged, the next pass
    comes. ``one_pass(app)`` takes the deployment's turn itself."""

    def __init__(
        self,
        app: Flask,
        one_pass: Callable[[Flask], object],
        *,
        name: str,
        interval: float,
        log: logging.Logger,
        at_once: bool,
    ) -> None:
        self.app, self.one_pass, self.name = app, one_pass, name
        self.interval, self.log, self.at_once = interval, log, at_once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"idp-{name}", daemon=True)

    def start(self) -> Background:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        if not self.at_once and self._stop.wait(self.interval):
            return
        while not self._stop.is_set():
            try:
                self.one_pass(self.app)
            except Exception as exc:  # a database hiccup must not end the passes
                self.log.error(
                    "%s: pass failed (%s); next pass in %ss",
                    self.name,
                    type(exc).__name__,
                    self.interval,
                )
            self._stop.wait(self.interval)
