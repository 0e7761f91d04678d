"""No input gets a 5xx: every route of the URL map, every method it accepts, odd path values,
malformed bodies and parameters, anonymously, after the password, during an invitation and
logged in (with a pending authorization request). In process, over WSGI: no network, no browser."""

from __future__ import annotations

import functools
import io
import re
from urllib.parse import quote, urlencode

import pytest
from werkzeug.routing import Rule

from idp.crypto import Passwords
from tests.support.inprocess import (  # every_feature_*: this module's app and demo fixtures
    Browser,
    every_feature_app,  # noqa: F401
    every_feature_demo,  # noqa: F401
    login_states,
    valid_authorization,
)

DEEP = 1_100  # nesting levels: beyond Python's recursion limit, small enough for every field
DEEP_LIST = "[" * DEEP + "]" * DEEP
DEEP_OBJECT = '{"":' * DEEP + "1" + "}" * DEEP
VERY_DEEP = "[" * 10_000 + "]" * 10_000
HUGE = "A" * 200_000  # under the 256 KiB request limit
SHORT_ODD = [
    "\x00",
    "a\x00b\n\r\t\x0b\x1b[0m\x7f",
    'é—"\\\u202e😀 ../../etc/passwd',
    "99999999999999999999999999",
    '{"type": "public-key", "id": [], "rawId": {}, "response": "x"}',
    "%00%0A%FF",
]
FORM_FIELDS = [
    "identifier",
    "password",
    "confirm",
    "code",
    "credential",
    "name",
    "certificate",
    "signature",
    "mechanism",
    "consent_decision",
]
OAUTH_FIELDS = [
    "client_id",
    "response_type",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "acr_values",
    "claims",
    "request",
    "request_uri",
    "response_mode",
    "login_hint",
    "ui_locales",
    "id_token_hint",
    "grant_type",
    "code_verifier",
    "client_secret",
    "access_token",
]
PAGE_FIELDS = ["lang", "reason", "next", "t", "r", "error"]
FIELDS = FORM_FIELDS + OAUTH_FIELDS + PAGE_FIELDS
PATH_VALUES = {
    "int": ["1", "99999999999999999999999999", "0"],
    "default": ["x", "%00", "%0A%0D", "%FF%FE", "é😀" + "A" * 4000, "..%2F..%2Fetc"],
    "path": ["css/idp.css", "..%2F..%2Fidp%2F__init__.py", "%00", "x" * 4000],
}


# --------------------------------------------------------------------------- fixtures


# --------------------------------------------------------------------------- requests


def path_variants(rule: Rule) -> list[str]:
    """The rule's URL with odd values in its path parameters (the first is a plausible one)."""
    urls = []
    kinds = {name: type(c).__name__ for name, c in rule._converters.items()}  # noqa: SLF001
    kind = {"IntegerConverter": "int", "PathConverter": "path"}
    count = max((len(PATH_VALUES[kind.get(c, "default")]) for c in kinds.values()), default=1)
    for index in range(count):
        url = rule.rule
        for name, converter in kinds.items():
            values = PATH_VALUES[kind.get(converter, "default")]
            url = re.sub(rf"<[^>]*\b{name}>", values[index % len(values)], url)
        urls.append(url)
    return urls


def encoded(pairs) -> str:
    """Form/query encoding that keeps JSON punctuation as is, so deep values stay small."""
    return urlencode(list(pairs), quote_via=quote, safe='[]{}:"')


def every_field(value: str) -> str:
    return encoded((field, value) for field in FIELDS)


@functools.cache
def parameter_sets() -> tuple[tuple[str, str], ...]:
    """Query strings or form bodies: odd values in every field, deep JSON, big, repeated."""
    return (
        *((f"every field {value[:12]!r}", every_field(value)) for value in SHORT_ODD),
        ("deep JSON lists", every_field(DEEP_LIST)),
        ("deep JSON objects", every_field(DEEP_OBJECT)),
        ("big values", every_field("é" * 1_000)),
        ("repeated parameters", encoded((f, v) for f in FIELDS for v in ("a", "b"))),
    )


@functools.cache
def authorization_sets() -> tuple[tuple[str, str], ...]:
    """A valid authorization request with one odd parameter (so validation gets that far)."""
    sets = []
    for field in OAUTH_FIELDS:
        for value in ('\x00\n"é\\', DEEP_OBJECT, "a b\tc"):
            params = valid_authorization(**{field: value})
            sets.append((f"authorization request, odd {field}", encoded(params.items())))
        params = [*valid_authorization().items(), (field, "again")]
        sets.append((f"authorization request, repeated {field}", encoded(params)))
    return tuple(sets)


FORM = "application/x-www-form-urlencoded"
JSON_BODIES = (
    VERY_DEEP,
    "[1, 2]",
    '{"code": 5, "certificate": [], "signature": {"a": null}}',
    '{"code": "\\u0000", "certificate": "\\u0000", "mechanism": "a\\u0000b"}',
    b'{"code": "\xff"}',
)
WEBAUTHN_OPTIONS = {
    "/login/passkey": "/login/passkey/options",
    "/login/webauthn": "/login/webauthn/options",
    "/enrol/webauthn": "/enrol/webauthn/options",
    "/account/webauthn/add": "/account/webauthn/add/options",
}


def fuzz_requests(method: str, url: str, rule: str, csrf: str, *, thorough: bool, full: bool):
    """(description, EnvironBuilder keyword arguments) for one route and method. ``full``
    adds the body formats and the one-odd-parameter authorization requests (run in two of
    the four sessions: they are read before the session matters)."""
    sets = parameter_sets() if thorough else parameter_sets()[:2]
    if url == "/authorize" and full:
        sets += authorization_sets()
    if method == "GET":
        for description, query in sets:
            yield f"query: {description}", {"query_string": query}
        if not thorough:
            return
        yield "query: invalid UTF-8", {"query_string": "client_id=%FF%FE&redirect_uri=%C3%28"}
        yield "raw query: invalid UTF-8", {"environ_overrides": {"QUERY_STRING": "x=\xff\xfe"}}
        if "<" in rule:  # the path parameter, as raw bytes
            wsgi_path = quote(url, safe="/%").encode().decode("latin-1")  # PEP 3333 form
            yield (
                "raw path: invalid UTF-8",
                {"environ_overrides": {"PATH_INFO": wsgi_path + "\xff\xc3("}},
            )
        if url == "/userinfo":
            yield (
                "header: odd bearer token",
                {"headers": {"Authorization": "Bearer \x7f" + "A" * 5000}},
            )
        if url.startswith("/login/card/tls"):
            yield (
                "header: odd card certificate",
                {
                    "headers": {"X-SSL-Client-Cert": "-----BEGIN%20" + "%FF" * 300},
                    "query_string": "t=x",
                },
            )
        return
    token = encoded([("csrf_token", csrf)])
    for description, body in sets:
        yield f"form: {description}", {"data": f"{body}&{token}", "content_type": FORM}
    if not thorough:
        return
    for name, value in (("10,000-deep", VERY_DEEP), ("huge", HUGE)):
        body = encoded([("credential", value), ("csrf_token", csrf)])
        yield f"form: {name} credential", {"data": body, "content_type": FORM}
        if url in WEBAUTHN_OPTIONS:  # so that the response reaches the verifier
            yield (
                f"form: {name} credential after options",
                {
                    "data": body,
                    "content_type": FORM,
                    "prepare": WEBAUTHN_OPTIONS[url],
                },
            )
    if not full:
        return
    yield (
        "form: invalid UTF-8",
        {
            "data": f"{token}&credential=".encode() + b"\xff\xfe&identifier=%FF%FE&code=\xc3",
            "content_type": FORM,
        },
    )
    files = {f: (io.BytesIO(b"\x00\xff"), "x.bin") for f in FIELDS}
    yield (
        "form: files instead of text",
        {
            "data": {"csrf_token": csrf, **files},
            "content_type": "multipart/form-data",
        },
    )
    for body in JSON_BODIES:
        yield (
            "JSON body",
            {
                "data": body,
                "content_type": "application/json",
                "headers": {"Accept": "application/json"},
            },
        )
    yield "unexpected content type", {"data": b"\x00" * 1000, "content_type": "application/cbor"}


def walk(app) -> list[tuple[str, str, str, bool]]:
    """(method, URL, rule, thorough) for every rule and method; odd path values get fewer
    bodies."""
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            for index, url in enumerate(path_variants(rule)):
                found.append((method, url, rule.rule, index == 0))
    return sorted(found)


# --------------------------------------------------------------------------- the test


def test_no_input_gets_a_server_error(app, demo, clock, monkeypatch):
    # Unknown identifiers are checked against a dummy argon2 hash; a cheap one keeps the walk
    # about parsing, not password hashing.
    monkeypatch.setitem(
        app.extensions, "idp.passwords", Passwords(time_cost=1, memory_kib=64, parallelism=1)
    )
    states = login_states(app, demo, clock)
    failures = []
    count = 0
    for state_name, state in states.items():
        browser = Browser(app, state)
        for method, url, rule, thorough in walk(app):
            attempts = fuzz_requests(
                method,
                url,
                rule,
                browser.csrf,
                thorough=thorough,
                full=state_name in ("anonymous", "logged-in"),
            )
            for description, kwargs in attempts:
                count += 1
                where = f"{method} {url[:80]} [{state_name}] {description}"
                try:
                    status = browser.open(method, url, **kwargs)
                except Exception as exc:  # escaped every error handler: the server's own 500
                    failures.append(f"crash {where}: {type(exc).__name__}: {str(exc)[:100]}")
                    continue
                if status >= 500:
                    failures.append(f"{status} {where}")
    assert not failures, "\n".join(sorted(set(failures)))
    assert count > 3000  # the walk really ran: every route, every state


# --------------------------------------------------------------------------- what the walk found


def logged_in_browser(app, demo, clock) -> Browser:
    return Browser(app, login_states(app, demo, clock)["logged-in"])


@pytest.mark.parametrize("body", [VERY_DEEP, "[1, 2]", '"text"', '{"code": 5}'])
def test_a_json_body_is_not_taken_for_form_data(app, demo, body):
    """Flask-WTF read a JSON body as the form: a list or a deep document was a 500."""
    anonymous = Browser(app, {})
    for path in ("/login", "/logout", "/login/passkey", "/login/card"):
        status = anonymous.open("POST", path, data=body, content_type="application/json")
        assert status in (200, 400), path  # the logout page is shown again


def test_uploaded_files_are_not_taken_for_form_fields(app, demo):
    anonymous = Browser(app, {})
    data = {"csrf_token": anonymous.csrf, "identifier": (io.BytesIO(b"x"), "x"), "password": "p"}
    assert anonymous.open("POST", "/login", data=data, content_type="multipart/form-data") == 400


def test_an_id_beyond_the_database_range_is_not_found(app, demo, clock):
    browser = logged_in_browser(app, demo, clock)
    for path in (
        "/account/totp/99999999999999999999/remove",
        "/account/webauthn/99999999999999999999/rename",
        "/account/smartcard/99999999999999999999/remove",
    ):
        data = {"csrf_token": browser.csrf, "name": "x"}
        assert browser.open("POST", path, data=data) == 404, path


def test_raw_bytes_in_the_query_string_are_read_as_percent_encoded(app, demo):
    anonymous = Browser(app, None)
    for path in ("/login", "/.well-known/openid-configuration", "/authorize"):
        status = anonymous.open("GET", path, environ_overrides={"QUERY_STRING": "lang=\xff\xfe"})
        assert status in (200, 400), path


def test_the_card_agent_api_refuses_deeply_nested_json(app, demo):
    agent = Browser(app, None)
    for body in (
        "[" * 5_000 + "]" * 5_000,
        '{"code": "x", "certificate": ' + "[" * 5_000 + "]" * 5_000 + "}",
    ):
        status = agent.open(
            "POST", "/smartcard/code/ABCD-EFGH", data=body, content_type="application/json"
        )
        assert status == 400


def test_a_nul_character_in_any_parameter_is_refused(app, demo):
    """PostgreSQL text cannot hold NUL: the nonce lookup and the card transaction failed."""
    anonymous = Browser(app, {})
    query = valid_authorization(nonce="n\x00")
    assert anonymous.open("GET", "/authorize", query_string=query) == 400
    assert anonymous.open("GET", "/login/card/tls", query_string={"t": "\x00"}) == 400
    data = {"csrf_token": anonymous.csrf, "identifier": "a\x00", "password": "p"}
    assert anonymous.open("POST", "/login", data=data) == 400
    assert anonymous.open("GET", "/enrol/a%00b") == 400
