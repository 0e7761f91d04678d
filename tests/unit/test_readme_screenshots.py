"""The README's screenshots are there: every image its Screenshots section shows is a PNG in
docs/screenshots, small enough for the repository, and they are exactly the ones
scripts/screenshots.py writes (so regenerating them refreshes the README)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_BYTES = 150 * 1024


def screenshots_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^## Screenshots\n(.*?)(?=^## )", readme, re.S | re.M)
    assert found, "README.md has no '## Screenshots' section"
    return found.group(1)


def shown_images() -> list[tuple[str, str]]:
    images = IMAGE.findall(screenshots_section())
    assert images, "the Screenshots section shows no image"
    return images


def test_every_screenshot_in_the_readme_is_a_small_png_in_docs_screenshots():
    for alt, target in shown_images():
        assert alt.strip(), f"{target}: no caption (alt text)"
        assert target.startswith("docs/screenshots/"), target
        path = ROOT / target
        assert path.is_file(), f"{target} is missing: run make screenshots"
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), f"{target} is not a PNG"
        assert len(data) <= MAX_BYTES, f"{target} is {len(data)} bytes"


def test_the_readme_shows_exactly_what_the_script_writes():
    spec = importlib.util.spec_from_file_location("screenshots", ROOT / "scripts/screenshots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shown = [Path(target).name for _, target in shown_images()]
    assert sorted(shown) == sorted(module.SHOTS)
    assert len(set(shown)) == len(shown)
