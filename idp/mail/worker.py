"""The sender running beside the served app: a thread that delivers what is due every few
seconds, never inside a request.

Every ``idp serve`` worker starts one; a lock shared by the processes (a PostgreSQL advisory
lock, or a file lock next to a SQLite database) lets one pass run at a time, and the passes
that find it taken skip their turn. Correctness does not rest on the lock: each message is
claimed atomically (``idp.mail.outbox.claim``).
"""

from __future__ import annotations

import logging
import sys
import threading

from flask import Flask

from idp.turns import turn

log = logging.getLogger("idp.mail")

INTERVAL_SECONDS = 5.0
ADVISORY_LOCK_KEY = 0x1D9_3A11  # "idp mail": one number for every process of the deployment


def sending_turn(app: Flask):
    """True while this process holds the deployment's sending turn; False if another has it."""
    return turn(app, "mail-sender", ADVISORY_LOCK_KEY)


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
