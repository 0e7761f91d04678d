"""Service-level tests run inside an application context with a fresh database."""

import pytest

from idp.db import get_db


@pytest.fixture
def db(app):
    with app.app_context():
        yield get_db()
