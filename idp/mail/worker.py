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

from flask import Flask

from idp.turns import Background, turn

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


def start(app: Flask, *, interval: float = INTERVAL_SECONDS) -> Background | None:
    """The sender beside the app, a pass at once then every ``interval`` seconds; None when
    no mail server is configured (said once in the log)."""
    from idp.mail.sender import DISABLED_LINE

    if not log.handlers:  # served by gunicorn: the sender's lines go to its error stream
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(process)d] %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    if not app.extensions["idp.settings"].mail.enabled:
        log.warning(DISABLED_LINE)
        return None
    return Background(app, one_pass, name="mail", interval=interval, log=log, at_once=True).start()
