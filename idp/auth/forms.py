"""Forms shared by the login pages; each factor keeps its own forms in its package.

``autocomplete`` values let password managers and assistive tech help.
"""

from __future__ import annotations

from flask import request
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.form import _Auto, _is_submitted
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from idp.auth.remember import remembered_identifier


class Form(FlaskForm):
    """An HTML form: its fields come from the urlencoded or multipart body and nowhere else.

    Flask-WTF would also take a JSON body, or uploaded files, for form data: a JSON list or a
    deeply nested document then raised (HTTP 500), and a file reached text validators.
    """

    class Meta(FlaskForm.Meta):
        def wrap_formdata(self, form, formdata):
            if formdata is _Auto:
                return request.form if _is_submitted() else None
            return formdata


class PasswordLoginForm(Form):
    identifier = StringField(
        _l("RPPS number or email"),
        validators=[
            DataRequired(message=_l("Enter your RPPS number or your email address.")),
            Length(max=254, message=_l("This identifier is too long.")),
        ],
        # "webauthn" lets the browser offer passkeys in the field's autofill (conditional UI).
        render_kw={
            "autocomplete": "username webauthn",
            "autocapitalize": "none",
            "spellcheck": "false",
        },
    )
    password = PasswordField(
        _l("Password"),
        validators=[
            DataRequired(message=_l("Enter your password.")),
            Length(max=256, message=_l("This password is too long.")),
        ],
        render_kw={"autocomplete": "current-password"},
    )
    # Ticked on a page shown while this browser remembers an identifier, so that signing in
    # again (re-authentication included) keeps remembering it rather than forgetting it.
    remember = BooleanField(
        _l("Remember my identifier on this computer"),
        default=lambda: remembered_identifier() is not None,
    )


class NewPasswordForm(Form):
    password = PasswordField(
        _l("New password"),
        validators=[
            DataRequired(message=_l("Choose a password.")),
            Length(min=12, max=256, message=_l("Choose a password of 12 to 256 characters.")),
        ],
        render_kw={"autocomplete": "new-password", "minlength": "12"},
    )
    confirm = PasswordField(
        _l("Confirm the password"),
        validators=[
            DataRequired(message=_l("Type the password again.")),
            EqualTo("password", message=_l("The passwords differ.")),
        ],
        render_kw={"autocomplete": "new-password"},
    )


class EmptyForm(Form):
    """A form with nothing but its CSRF token (logout, remove, confirm buttons)."""
