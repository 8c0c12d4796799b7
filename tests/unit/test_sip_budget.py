"""The SIP message budget counts our CPU time, not the time a busy host kept us off the CPU."""

from __future__ import annotations

import logging
import time

from mediasrv.sip.guard import MessageBudget, SourceLog


def _budget(limit_s: float, records: list[logging.LogRecord]) -> MessageBudget:
    logger = logging.getLogger("test.sip.budget")
    logger.propagate = False
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    return MessageBudget({}, limit_s, SourceLog(logger))


def test_waiting_off_the_cpu_is_not_over_budget():
    records: list[logging.LogRecord] = []
    budget = _budget(0.005, records)
    started = budget.start()
    time.sleep(0.03)  # wall time passes, as when the host preempts the server mid-message
    took = budget.done(started, b"BYE sip:a@127.0.0.1 SIP/2.0\r\n\r\n", ("127.0.0.1", 5062))
    assert took < 0.005
    assert budget.stats["over_budget"] == 0 and records == []


def test_cpu_spent_over_the_budget_is_counted_and_logged_with_both_times():
    records: list[logging.LogRecord] = []
    budget = _budget(0.005, records)
    started = budget.start()
    end = time.thread_time() + 0.012
    while time.thread_time() < end:  # our own work: CPU time
        pass
    took = budget.done(started, b"INVITE sip:a@127.0.0.1 SIP/2.0\r\n\r\n", ("127.0.0.1", 5062))
    assert took >= 0.012
    assert budget.stats["over_budget"] == 1 and budget.max_s == took
    (line,) = [r.getMessage() for r in records]
    assert "ms of CPU (budget 5 ms;" in line and "ms wall)" in line and "INVITE sip:a@127.0.0.1" in line
