"""Request input the framework would otherwise turn into a server error.

- A query string carrying raw bytes that are not ASCII (a client may send them unencoded):
  Werkzeug decodes ``request.args`` strictly and raises, even inside the error handler. They are
  percent-encoded here, as a browser would have sent them, and then read like any other input.
- An ``<int:…>`` path parameter larger than a database id (64-bit): the lookup overflowed.
  Such a URL names nothing, so it is a 404.
- A NUL character in a parameter or a path value: PostgreSQL text cannot hold one, so the
  first query using it failed. No field of this service has a use for it: the request is
  refused (400) before any view runs.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Flask, abort, request
from werkzeug.routing import IntegerConverter

MAX_ID = 2**63 - 1
"""BIGINT, and SQLite's INTEGER."""


class DatabaseIdConverter(IntegerConverter):
    """``<int:…>`` with the range of a database id."""

    def __init__(self, url_map, *args, **kwargs) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(url_map, *args, **kwargs)


class AsciiQueryString:
    """WSGI middleware: percent-encode raw non-ASCII bytes in ``QUERY_STRING``."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        query = environ.get("QUERY_STRING", "")
        if not query.isascii():
            # PEP 3333: the bytes arrive as a latin-1 str; everything ASCII is kept as sent.
            try:
                raw = query.encode("latin-1")
            except UnicodeEncodeError:  # a server outside PEP 3333
                raw = query.encode("utf-8", "replace")
            environ["QUERY_STRING"] = quote(raw, safe=_ASCII_PRINTABLE)
        return self.wsgi_app(environ, start_response)


_ASCII_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def carries_nul() -> bool:
    values = []
    query = request.query_string
    if b"%00" in query or b"\x00" in query:  # else no value of the query holds a NUL
        values += [value for _key, value in request.args.items(multi=True)]
    if request.mimetype in FORM_TYPES:  # only then is there a form (parsing one costs)
        values += [value for _key, value in request.form.items(multi=True)]
    values += list((request.view_args or {}).values())
    return any(isinstance(value, str) and "\x00" in value for value in values)


def init_app(app: Flask) -> None:
    """Before the blueprints register, so every ``<int:…>`` rule uses the bounded converter."""
    app.url_map.converters["int"] = DatabaseIdConverter
    app.wsgi_app = AsciiQueryString(app.wsgi_app)

    @app.before_request
    def refuse_nul_characters():
        if carries_nul():
            abort(400)
