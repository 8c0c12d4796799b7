"""Real-time scheduling for the media clock's thread (``--realtime-priority N``).

Why: the clock wakes every millisecond on an absolute timerfd deadline, and when another
process is running on the same core the kernel's fair scheduler may let it finish its slice
first, which is the lateness a caller hears as jitter.  With SCHED_FIFO the wake-up preempts
any ordinary process at once.  Asterisk (``-p``) and FreeSWITCH (``-rp``) offer the same.

Only the thread that calls :func:`apply` (the event loop's, which runs the clock) gets the
real-time policy: ``SCHED_RESET_ON_FORK`` makes every thread and process created afterwards
(decode threads, the decode worker, executor threads) an ordinary SCHED_OTHER task, so a
CPU-heavy decode can never hold the core against the clock at real-time priority.  The
kernel's RT throttling (``kernel.sched_rt_runtime_us``, 95 % by default) still leaves other
tasks a share if the server ever spins.  Without the privilege (CAP_SYS_NICE or an RLIMIT_RTPRIO
allowance) the server logs why and runs with normal scheduling.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("mediasrv.realtime")


def apply(priority: int) -> str:
    """Put the calling thread under SCHED_FIFO at *priority* (1-99); returns what happened, for the log."""
    if priority <= 0:
        return "normal scheduling"
    if not hasattr(os, "sched_setscheduler"):
        return "normal scheduling (no sched_setscheduler on this platform)"
    policy = os.SCHED_FIFO | getattr(os, "SCHED_RESET_ON_FORK", 0)
    try:
        os.sched_setscheduler(0, policy, os.sched_param(priority))
    except OSError as exc:
        log.warning("could not switch to real-time scheduling (SCHED_FIFO %d): %s; running with normal "
                    "scheduling (needs CAP_SYS_NICE or `ulimit -r %d`)", priority, exc.strerror, priority)
        return f"normal scheduling (SCHED_FIFO {priority} refused: {exc.strerror})"
    return f"SCHED_FIFO priority {priority} on the media clock's thread"


def current() -> tuple[int, int]:
    """(policy without flags, priority) of the calling thread."""
    flags = getattr(os, "SCHED_RESET_ON_FORK", 0)
    return os.sched_getscheduler(0) & ~flags, os.sched_getparam(0).sched_priority
