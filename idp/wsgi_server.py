"""Production serving with gunicorn; each worker builds its own app (no shared memory)."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Mapping

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from idp.redaction import REDACTED, redact_path, redact_query, redact_text, redact_uri


class RedactingLogger(Logger):
    """gunicorn's logger, with secrets taken out of every URL it writes (``idp.redaction``).

    Covers the access log's atoms, whatever the format: the request line ``%(r)s``, path
    ``%(U)s``, query ``%(q)s`` and Referer ``%(f)s``, and the same values reached as
    ``%({…}i)s`` headers or ``%({…}e)s`` environ variables; credential headers are dropped.
    Messages about failed requests in the error log are redacted too."""

    URI_ATOMS = (
        "f",
        "{referer}i",
        "{location}o",
        "{raw_uri}e",
        "{request_uri}e",
        "{http_referer}e",
    )
    PATH_ATOMS = ("U", "{path_info}e")
    HIDDEN_ATOMS = (
        "{authorization}i",
        "{cookie}i",
        "{proxy-authorization}i",
        "{set-cookie}o",
        "{http_authorization}e",
        "{http_cookie}e",
    )

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        method, _space, rest = (atoms.get("r") or "").partition(" ")
        target, _space, protocol = rest.rpartition(" ")
        if target:
            atoms["r"] = f"{method} {redact_uri(target)} {protocol}"
        for key in self.URI_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_uri(atoms[key])
        for key in self.PATH_ATOMS:
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_path(atoms[key])
        path = environ.get("PATH_INFO") or ""
        for key in ("q", "{query_string}e"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_query(atoms[key], path)
        for key in self.HIDDEN_ATOMS:
            if key in atoms:
                atoms[key] = REDACTED
        return atoms

    def _redacted(self, msg, args) -> str:
        if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]  # as the logging module does
        return redact_text(str(msg) % args if args else str(msg))

    def error(self, msg, *args, **kwargs):
        super().error(self._redacted(msg, args), **kwargs)

    def warning(self, msg, *args, **kwargs):
        super().warning(self._redacted(msg, args), **kwargs)

    def exception(self, msg, *args, **kwargs):
        super().exception(self._redacted(msg, args), **kwargs)


class IdPServer(BaseApplication):
    def __init__(self, options: dict, factory=None) -> None:
        self.options = options
        self.factory = factory
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        """In each worker: the app, and beside it the mail sender's thread and the prune's
        (never a request's work; the workers take turns, see ``idp.turns``)."""
        give_back_large_buffers()
        if self.factory is not None:
            app = self.factory()
        else:
            from idp import create_app, housekeeping
            from idp.mail import worker

            app = create_app()
            worker.start(app)
            housekeeping.start(app)
        freeze_long_lived()
        return app


def freeze_long_lived() -> None:
    """What exists once the app is built (modules, the app, its caches) lives as long as the
    process: moved out of the collector's reach, so that a full collection only walks what
    requests made since. Without it, a collection of the whole heap (about 150,000 objects)
    took 146 ms on the project's test machine, in the middle of whichever request triggered
    it. Called in the master before forking too (as Python's documentation advises for a
    server that forks), so that collections in the workers do not write to the pages they
    share with it."""
    gc.collect()
    gc.freeze()


M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (malloc.h)."""


def give_back_large_buffers() -> None:
    """Each password check allocates its argon2 memory (9 MiB by default) and frees it. glibc
    raises its mmap threshold after such a free, and from then on every buffer below that size,
    of any thread, comes from a heap that keeps it: a worker ended a login burst 9 MiB larger.
    A fixed threshold keeps large buffers mapped apart, returned to the system when freed (the
    argon2 buffer is mapped afresh for each hash: a few milliseconds of page faults). Elsewhere
    than glibc: nothing to do."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass


KEEPALIVE_SECONDS = 5
"""How long an idle connection stays open for the next request (behind a proxy that reuses
its connections, or a browser loading a page's assets)."""


def run(
    *,
    host: str,
    port: int,
    workers: int,
    threads: int = 4,
    access_log: bool = True,
    factory=None,
) -> None:
    """``workers`` processes of ``threads`` threads each (gunicorn's ``gthread``): a request
    waiting on the database or a password hash (argon2 releases the GIL) holds one thread, not
    the process."""
    freeze_long_lived()
    IdPServer(
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "worker_class": "gthread",
            "threads": threads,
            "keepalive": KEEPALIVE_SECONDS,
            "accesslog": "-" if access_log else None,
            "logger_class": RedactingLogger,
            "forwarded_allow_ips": "127.0.0.1",
            "timeout": 30,
        },
        factory,
    ).run()
