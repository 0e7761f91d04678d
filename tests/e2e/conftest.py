"""Browser fixtures shared by every e2e module, so one Chromium serves the whole session."""

from tests.support.browser import (  # noqa: F401  (fixtures are found by name)
    browser_page_fixture,
    chromium_browser_fixture,
)
