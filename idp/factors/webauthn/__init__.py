"""Security keys and passkeys (WebAuthn): after a password, or alone."""

from __future__ import annotations

from idp.factors.webauthn.config import check, configure
from idp.factors.webauthn.method import WebAuthnMethod

__all__ = ["configure", "install"]


def install(app, csrf) -> WebAuthnMethod:
    """Refuses a relying-party setup browsers would reject (``config.check``)."""
    from idp.factors.webauthn.views import bp

    check(app.extensions["idp.settings"])
    app.register_blueprint(bp)
    return WebAuthnMethod()
