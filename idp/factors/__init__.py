"""The factors this product ships, one package each.

Each package's ``install(app, csrf)`` registers its pages and returns its authentication method
(``idp.auth.contract.AuthMethod``), or None when the deployment did not configure it. Adding a
factor is one new package and one line here.
"""

INSTALLED = (
    "idp.factors.totp",
    "idp.factors.webauthn",
    "idp.factors.smartcard",
    "idp.factors.recovery",
)
