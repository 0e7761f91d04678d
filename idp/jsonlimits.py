"""JSON from the outside world, parsed within limits.

Python's parser recurses once per nesting level: ``[[[[…]]]]`` ten thousand deep raises
``RecursionError`` (an HTTP 500), not ``ValueError``. Every document a browser, an agent or a
client sends is parsed here, with a size limit checked first and a nesting limit checked
before the parser runs, so a hostile document is refused as malformed like any other. A
``\\u0000`` escape is refused too: PostgreSQL text cannot hold a NUL.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
"""WebAuthn responses nest 3 levels, the card agent's answers 2: 32 is generous."""

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class JSONLimitError(ValueError):
    """Not JSON, not UTF-8, too large or too deeply nested."""


def loads(raw: str | bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that only ever raises :class:`JSONLimitError` (a ``ValueError``)."""
    if isinstance(raw, bytes):
        if len(raw) > max_bytes:
            raise JSONLimitError(f"larger than {_size(max_bytes)}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONLimitError("not UTF-8") from exc
    elif isinstance(raw, str):
        text = raw
        if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            raise JSONLimitError(f"larger than {_size(max_bytes)}")
    else:
        raise JSONLimitError("not text")
    if nesting_depth(text) > max_depth:
        raise JSONLimitError(f"nested deeper than {max_depth} levels")
    if "\\u0000" in text.lower():  # no database text column can hold a NUL
        raise JSONLimitError("contains a NUL character")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise JSONLimitError("not JSON") from exc


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting of a JSON text, without parsing it (strings ignored)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def check_depth(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """The same limit for an already-built object (walked without recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list | tuple):
            if depth > max_depth:
                raise JSONLimitError(f"nested deeper than {max_depth} levels")
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"
