"""WebAuthn responses and key names, as the pages post them."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Length

from idp.auth.forms import Form


class CredentialForm(Form):
    """The browser's WebAuthn response, filled in by static/js/webauthn.js.

    No length validator: the verifier refuses oversized or malformed payloads itself, and a
    refusal there is audited and throttled like any other failed attempt.
    """

    credential = HiddenField(validators=[DataRequired()])


class NewCredentialForm(CredentialForm):
    name = StringField(
        _l("Name of this key"),
        validators=[Length(max=64)],
        render_kw={"autocomplete": "off", "maxlength": "64"},
    )


class CredentialNameForm(Form):
    name = StringField(
        _l("New name"),
        validators=[DataRequired(), Length(max=64)],
        render_kw={"autocomplete": "off", "maxlength": "64"},
    )
