"""The CPS card and its PIN, read by the workstation agent or presented over TLS."""

from __future__ import annotations

from idp.factors.smartcard.method import SmartcardMethod


def install(app, csrf) -> SmartcardMethod | None:
    """The card's pages always answer (saying card login is off); the method exists only
    once the operator configured its trust anchors."""
    from idp.factors.smartcard import views

    app.register_blueprint(views.bp)
    csrf.exempt(views.code_api)  # the agent's JSON API: no browser, no cookie
    trust = app.extensions["idp.settings"].smartcard
    return SmartcardMethod(trust) if trust is not None else None
