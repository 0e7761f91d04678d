"""``idp.db.memoized``: a lookup asked twice in one unit of work reads once, and never answers
with something stale (pending changes flushed first, forgotten at flush, commit, rollback)."""

from __future__ import annotations

from sqlalchemy import event, update

from idp.db import get_db
from idp.factors.totp.method import active_devices
from idp.models import TotpDevice
from idp.services import cipher
from tests.support import factories


class Selects:
    def __init__(self, app) -> None:
        self.count = 0
        event.listen(app.extensions["idp.engine"], "before_cursor_execute", self._seen)

    def _seen(self, _conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("SELECT") and "totp_devices" in statement:
            self.count += 1


def test_the_second_lookup_reads_nothing_and_each_caller_gets_its_own_list(app, clock):
    with app.app_context():
        db = get_db()
        owner = factories.practitioner(db, clock)
        factories.totp_device(db, clock, owner, cipher=cipher())
        db.commit()
        selects = Selects(app)
        first = active_devices(db, owner.id)
        second = active_devices(db, owner.id)
        assert selects.count == 1 and len(first) == 1 and first == second
        first.clear()  # a caller changing its list changes nobody else's
        assert len(active_devices(db, owner.id)) == 1


def test_a_pending_change_is_flushed_and_seen(app, clock):
    with app.app_context():
        db = get_db()
        owner = factories.practitioner(db, clock)
        db.commit()
        assert active_devices(db, owner.id) == []
        factories.totp_device(db, clock, owner, cipher=cipher())  # added, not flushed
        assert len(active_devices(db, owner.id)) == 1


def test_a_commit_or_rollback_forgets_what_was_kept(app, clock):
    with app.app_context():
        db = get_db()
        owner = factories.practitioner(db, clock)
        device, _seed = factories.totp_device(db, clock, owner, cipher=cipher())
        db.commit()
        assert len(active_devices(db, owner.id)) == 1
        with app.extensions["idp.engine"].begin() as other:  # another request removes it
            other.execute(
                update(TotpDevice).where(TotpDevice.id == device.id).values(removed_at=clock.now())
            )
        assert len(active_devices(db, owner.id)) == 1  # same unit of work: kept
        db.commit()
        assert active_devices(db, owner.id) == []
        factories.totp_device(db, clock, owner, cipher=cipher(), name="Other")
        db.flush()
        assert len(active_devices(db, owner.id)) == 1
        db.rollback()
        assert active_devices(db, owner.id) == []
