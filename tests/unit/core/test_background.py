"""``idp.turns.Background``: passes every ``interval`` seconds beside the app; a failing pass is
logged (its kind, never its message) and the next one still comes."""

from __future__ import annotations

import logging
import threading

from idp.turns import Background


class Secret(Exception):
    pass


def passes(*, fail_first: bool, count: int):
    calls: list[float] = []
    done = threading.Event()

    def one_pass(_app):
        calls.append(len(calls))
        if len(calls) >= count:
            done.set()
        if fail_first and len(calls) == 1:
            raise Secret("password=hunter2")

    return calls, done, one_pass


def test_a_failing_pass_is_logged_by_kind_and_the_next_comes(caplog):
    calls, done, one_pass = passes(fail_first=True, count=3)
    log = logging.getLogger("idp.test-background")
    with caplog.at_level(logging.ERROR, logger=log.name):
        worker = Background(
            object(), one_pass, name="test", interval=0.01, log=log, at_once=True
        ).start()
        assert done.wait(5)
        worker.stop()
    assert len(calls) >= 3
    [record] = [r for r in caplog.records if r.name == log.name]
    assert record.getMessage() == "test: pass failed (Secret); next pass in 0.01s"
    assert "hunter2" not in caplog.text


def test_the_first_pass_comes_at_once_or_after_one_interval():
    log = logging.getLogger("idp.test-background")
    calls, done, one_pass = passes(fail_first=False, count=1)
    worker = Background(object(), one_pass, name="test", interval=60, log=log, at_once=True)
    worker.start()
    assert done.wait(5)  # not 60 s later
    worker.stop()
    assert calls == [0]
    calls, _done, one_pass = passes(fail_first=False, count=1)
    worker = Background(object(), one_pass, name="test", interval=60, log=log, at_once=False)
    worker.start()
    worker.stop()  # within the first interval: no pass yet, and the thread ends
    assert calls == [] and not worker._thread.is_alive()
