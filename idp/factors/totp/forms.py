"""The authenticator app's code field."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from idp.auth.forms import Form


class CodeForm(Form):
    code = StringField(
        _l("6-digit code"),
        validators=[
            DataRequired(message=_l("Enter the 6-digit code shown in your app.")),
            Length(min=6, max=8, message=_l("The code has 6 digits.")),
        ],
        render_kw={
            "autocomplete": "one-time-code",
            "inputmode": "numeric",
            "pattern": "[0-9 ]{6,8}",
            "maxlength": "8",
        },
    )
