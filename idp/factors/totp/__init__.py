"""Authenticator apps (TOTP): codes that change every 30 seconds."""

from __future__ import annotations

from idp.factors.totp.method import TotpMethod


def install(app, csrf) -> TotpMethod:
    from idp.factors.totp.views import bp

    app.register_blueprint(bp)
    return TotpMethod(app.extensions["idp.cipher"])
