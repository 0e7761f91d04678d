"""French comes first: every message in the code and templates has a French translation."""

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo

ROOT = Path(__file__).resolve().parents[3]
METHODS = [
    ("idp/**.py", "python"),
    ("templates/**.html", "jinja2"),
    ("templates/**.txt", "jinja2"),
]
KEYWORDS = {"_": None, "gettext": None, "_l": None, "lazy_gettext": None, "ngettext": (1, 2)}


def test_every_message_is_translated_in_the_compiled_catalogue():
    with open(ROOT / "idp/translations/fr/LC_MESSAGES/messages.mo", "rb") as handle:
        catalogue = read_mo(handle)
    messages = {
        message if isinstance(message, str) else message[0]
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT, METHODS, keywords=KEYWORDS
        )
    }
    assert len(messages) > 100
    untranslated = sorted(m for m in messages if not (catalogue.get(m) and catalogue[m].string))
    assert untranslated == []
