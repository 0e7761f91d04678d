"""The authentication methods this deployment runs, in the order they are offered.

Built once in ``create_app`` from configuration (a deployment without card trust anchors has no
card method) and kept in ``app.extensions["idp.methods"]``. The account page, the second-factor
choice, "highest level", "last factor" and "revoke everything" are loops over it: nothing
outside a factor's own package names a factor.

A ``limited`` method (recovery codes) is listed with the others (the account page shows its
section) but is not a factor: the levels, "last factor", the second-step choice and the NIST-10
binding requirement count only the methods that are not limited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from sqlalchemy.orm import Session

from idp.auth import assurance
from idp.auth.contract import AuthMethod, Enrolment, LimitedMethod, best_level


class Registry:
    def __init__(self, methods: Iterable[AuthMethod]) -> None:
        self._methods: dict[str, AuthMethod] = {}
        for method in methods:
            if method.kind in self._methods:
                raise ValueError(f"two methods named {method.kind!r}")
            self._methods[method.kind] = method

    def __iter__(self) -> Iterator[AuthMethod]:
        return iter(self._methods.values())

    def __contains__(self, kind: object) -> bool:
        return kind in self._methods

    def get(self, kind: str) -> AuthMethod | None:
        return self._methods.get(kind)

    def __getitem__(self, kind: str) -> AuthMethod:
        return self._methods[kind]

    def factors(self) -> Iterator[AuthMethod]:
        """The methods that are factors: every one but the limited ones."""
        return (m for m in self if not m.limited)

    def limited_method(self) -> LimitedMethod | None:
        """The limited method (recovery codes), if this deployment runs one."""
        return next((m for m in self if m.limited), None)

    def enrolments(
        self, db: Session, practitioner_id: int, *, now: dt.datetime
    ) -> dict[str, list[Enrolment]]:
        """Every method's enrolments (usable or not), by kind, limited methods included."""
        return {m.kind: m.enrolments(db, practitioner_id, now=now) for m in self}

    def levels(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> dict[str, str]:
        """The best level each factor the practitioner can log in with reaches."""
        levels = {}
        for method in self.factors():
            level = best_level(method.enrolments(db, practitioner_id, now=now))
            if level is not None:
                levels[method.kind] = level
        return levels

    def usable_count(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> int:
        """Factors that can still log in: an account must never drop to zero (recovery codes
        do not count: they only let the practitioner bind a new factor)."""
        return sum(
            1
            for method in self.factors()
            for enrolment in method.enrolments(db, practitioner_id, now=now)
            if enrolment.usable
        )

    def highest_level(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> str | None:
        levels = self.levels(db, practitioner_id, now=now).values()
        return max(levels, key=assurance.rank) if levels else None

    def binding_requirement(
        self, db: Session, practitioner_id: int, *, new_level: str, now: dt.datetime
    ) -> str | None:
        """NIST-10: binding a factor needs a login at min(the strongest level the account's
        factors reach, the new factor's level); None for an account with no factor yet."""
        current = self.highest_level(db, practitioner_id, now=now)
        if current is None:
            return None
        return min(current, new_level, key=assurance.rank)

    def offered(
        self, db: Session, practitioner_id: int, *, required_acr: str | None, now: dt.datetime
    ) -> list[str]:
        """The methods the practitioner has that reach ``required_acr``, strongest first."""
        owned = self.levels(db, practitioner_id, now=now)
        ranked = sorted(owned, key=lambda kind: assurance.rank(owned[kind]), reverse=True)
        return [
            kind for kind in ranked if assurance.rank(owned[kind]) >= assurance.rank(required_acr)
        ]

    def default_choice(self, offered: list[str]) -> str | None:
        """After a password: the strongest offered method that is not a whole login by
        itself (a card and its PIN: offered, never chosen by default)."""
        return next((k for k in offered if not self[k].standalone), offered[0] if offered else None)

    def invitation_method(self) -> AuthMethod | None:
        """The method an invitation binds first (its page offers the others)."""
        return next((m for m in self.factors() if m.invitation_endpoint), None)

    def revoke_all(self, db: Session, practitioner_id: int, *, now: dt.datetime) -> int:
        """Every enrolment of every method made unusable; the caller audits and commits."""
        return sum(m.revoke_all(db, practitioner_id, now=now) for m in self)

    def message(self, code: str) -> str | None:
        """The translated message a method gives for one of its error codes."""
        for method in self:
            if code in method.messages:
                return str(method.messages[code])
        return None
