"""The recovery code field."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from idp.auth.forms import Form


class RecoveryCodeForm(Form):
    code = StringField(
        _l("Recovery code"),
        validators=[
            DataRequired(message=_l("Enter one of your recovery codes.")),
            Length(max=64, message=_l("A recovery code has 16 characters.")),
        ],
        render_kw={
            "autocomplete": "off",
            "autocapitalize": "characters",
            "spellcheck": "false",
            "maxlength": "64",
            "placeholder": "XXXX-XXXX-XXXX-XXXX",
        },
    )
