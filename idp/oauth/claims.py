"""Claims released per scope, shared by the ID token and the UserInfo endpoint."""

from __future__ import annotations

from sqlalchemy import Row

from idp.models import Practitioner
from idp.professions import PROFESSIONS

SCOPES_SUPPORTED = ("openid", "profile", "email", "rpps")
CLAIMS_SUPPORTED = (
    "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "name",
    "given_name", "family_name", "email", "email_verified", "rpps", "profession_code",
    "profession",
)  # fmt: skip


def user_claims(practitioner: Practitioner | Row, scope: str) -> dict:
    """``practitioner``: the model, or a row with its columns of the same names."""
    scopes = set((scope or "").split())
    claims: dict = {"sub": practitioner.subject}
    if "profile" in scopes:
        claims.update(
            name=f"{practitioner.given_name} {practitioner.family_name}",
            given_name=practitioner.given_name,
            family_name=practitioner.family_name,
        )
    if "email" in scopes:
        claims.update(email=practitioner.email, email_verified=False)
    if "rpps" in scopes:
        claims.update(
            rpps=practitioner.rpps,
            profession_code=practitioner.profession_code,
            profession=PROFESSIONS.get(practitioner.profession_code, ""),
        )
    return claims
