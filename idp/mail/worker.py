"""The sender running beside the served app: a thread that delivers what is due every few
seconds, never inside a request.

Every ``idp serve`` worker starts one; a lock shared by the processes (a PostgreSQL advisory
lock, or a file lock next to a SQLite database) lets one pass run at a time, and the passes
that find it taken skip their turn. Correctness does not rest on the lock: each message is
claimed atomically (``idp.mail.outbox.claim``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import sys
import threading
from collections.abc import Iterator

from flask import Flask
from sqlalchemy import text

log = logging.getLogger("idp.mail")

INTERVAL_SECONDS = 5.0
ADVISORY_LOCK_KEY = 0x1D9_3A11  # "idp mail": one number for every process of the deployment


@contextlib.contextmanager
def sending_turn(app: Flask) -> Iterator[bool]:
    """True while this process holds the deployment's sending turn; False if another has it."""
    engine = app.extensions["idp.engine"]
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            taken = connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            ).scalar()
            connection.commit()
            try:
                yield bool(taken)
            finally:
                if taken:
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                    )
                    connection.commit()
        return
    settings = app.extensions["idp.settings"]
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    with open(settings.instance_path / "mail-sender.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def one_pass(app: Flask):
    """Deliver what is due now if no other process is sending; None if it was its turn."""
    from idp.mail import deliver_app

    with sending_turn(app) as mine:
        if not mine:
            return None
        return deliver_app(app)


class MailWorker:
    def __init__(self, app: Flask, *, interval: float = INTERVAL_SECONDS) -> None:
        self.app = app
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idp-mail", daemon=True)

    def start(self) -> MailWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        from idp.mail.sender import DISABLED_LINE

        if not self.app.extensions["idp.settings"].mail.enabled:
            log.warning(DISABLED_LINE)
            return
        while not self._stop.is_set():
            try:
                one_pass(self.app)
            except Exception as exc:  # a database hiccup must not end the sender
                log.error(
                    "mail: sending pass failed (%s); next pass in %ss",
                    type(exc).__name__,
                    self.interval,
                )
            self._stop.wait(self.interval)


def start(app: Flask, *, interval: float = INTERVAL_SECONDS) -> MailWorker:
    if not log.handlers:  # served by gunicorn: the sender's lines go to its error stream
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(process)d] %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    return MailWorker(app, interval=interval).start()
