"""The CPS card and its PIN, read by the workstation agent or presented over TLS."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from idp.factors.smartcard.method import SmartcardMethod
from idp.factors.smartcard.trust import load_card_trust


def configure(settings, environ: Mapping[str, str] | None = None):
    """``settings`` with the card trust the environment configures (``load_card_trust``).

    Called by the composition root for a running server: ``idp.config`` never reads card
    trust itself, so configuration stays below every factor. Raises CardTrustConfigError.
    """
    return dataclasses.replace(settings, smartcard=load_card_trust(environ))


def install(app, csrf) -> SmartcardMethod | None:
    """The card's pages always answer (saying card login is off); the method exists only
    once the operator configured its trust anchors."""
    from idp.factors.smartcard import views

    app.register_blueprint(views.bp)
    csrf.exempt(views.code_api)  # the agent's JSON API: no browser, no cookie
    trust = app.extensions["idp.settings"].smartcard
    return SmartcardMethod(trust) if trust is not None else None
