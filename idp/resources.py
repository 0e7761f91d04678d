"""Where the pages and the migrations are: the repository's top-level ``templates/`` and
``migrations/`` in a checkout, or their copies in ``idp/bundled/`` inside a wheel (setup.py
copies them there at build time)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    bundled = PACKAGE / "bundled" / name
    return bundled if bundled.is_dir() else PACKAGE.parent / name
