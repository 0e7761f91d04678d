"""The agent's answer as the card login page posts it."""

from __future__ import annotations

from wtforms import HiddenField

from idp.auth.forms import Form


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
