"""Recovery codes: ten single-use codes that open a limited login, to bind a new factor."""

from __future__ import annotations

from idp.factors.recovery.method import RecoveryMethod


def install(app, csrf) -> RecoveryMethod:
    from idp.factors.recovery.views import bp

    app.register_blueprint(bp)
    return RecoveryMethod()
