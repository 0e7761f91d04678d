"""Login forms. ``autocomplete`` values let password managers and assistive tech help."""

from __future__ import annotations

from flask import request
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.form import _Auto, _is_submitted
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length


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
        validators=[DataRequired(), Length(max=254)],
        # "webauthn" lets the browser offer passkeys in the field's autofill (conditional UI).
        render_kw={
            "autocomplete": "username webauthn",
            "autocapitalize": "none",
            "spellcheck": "false",
        },
    )
    password = PasswordField(
        _l("Password"),
        validators=[DataRequired(), Length(max=256)],
        render_kw={"autocomplete": "current-password"},
    )


class CodeForm(Form):
    code = StringField(
        _l("6-digit code"),
        validators=[DataRequired(), Length(min=6, max=8)],
        render_kw={
            "autocomplete": "one-time-code",
            "inputmode": "numeric",
            "pattern": "[0-9 ]{6,8}",
            "maxlength": "8",
        },
    )


class NewPasswordForm(Form):
    password = PasswordField(
        _l("New password"),
        validators=[DataRequired(), Length(min=12, max=256)],
        render_kw={"autocomplete": "new-password", "minlength": "12"},
    )
    confirm = PasswordField(
        _l("Confirm the password"),
        validators=[DataRequired(), EqualTo("password", message=_l("The passwords differ."))],
        render_kw={"autocomplete": "new-password"},
    )


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


class EmptyForm(Form):
    """A form with nothing but its CSRF token (logout, remove, confirm buttons)."""


class CardAnswerForm(Form):
    """The workstation agent's answer, filled in by static/js/smartcard.js. No PIN field: the PIN
    goes to the agent on the loopback address only.

    No validators beyond the CSRF token: the verifier refuses missing, oversized or malformed
    answers itself, and such a refusal is audited and throttled like any other.
    """

    certificate = HiddenField()
    signature = HiddenField()
    mechanism = HiddenField()

    def answer(self) -> dict[str, str]:
        """In ``smartcard.protocol``'s shape."""
        return {
            "certificate": self.certificate.data or "",
            "signature": self.signature.data or "",
            "mechanism": self.mechanism.data or "",
        }
