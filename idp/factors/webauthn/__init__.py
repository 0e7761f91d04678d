"""Security keys and passkeys (WebAuthn): after a password, or alone."""

from __future__ import annotations

from idp.factors.webauthn.method import WebAuthnMethod


def install(app, csrf) -> WebAuthnMethod:
    from idp.factors.webauthn.views import bp

    app.register_blueprint(bp)
    return WebAuthnMethod()
