"""realtime.apply in a child process (never in the test runner): the calling thread gets SCHED_FIFO,
threads and processes it creates afterwards do not."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mediasrv.ops import realtime

CHILD = r"""
import json, os, subprocess, sys, threading
from mediasrv.ops import realtime
said = realtime.apply(7)
out = {"said": said, "main": realtime.current()}
box = {}
t = threading.Thread(target=lambda: box.update(thread=realtime.current()))
t.start(); t.join()
out["thread"] = box["thread"]
child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0) & ~getattr(os, 'SCHED_RESET_ON_FORK', 0))"],
                       capture_output=True, text=True, check=True)
out["process_policy"] = int(child.stdout)
print(json.dumps(out))
"""


def test_off_is_a_no_op() -> None:
    before = realtime.current()
    assert realtime.apply(0) == "normal scheduling"
    assert realtime.current() == before


def test_fifo_for_the_calling_thread_only() -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    normal = [os.SCHED_OTHER, 0]
    if out["said"].startswith("SCHED_FIFO"):
        assert out["main"] == [os.SCHED_FIFO, 7]
        assert out["thread"] == normal, "a thread made after apply() must not inherit SCHED_FIFO"
        assert out["process_policy"] == os.SCHED_OTHER
    else:  # no CAP_SYS_NICE here: the server carries on with normal scheduling and says why
        assert "refused" in out["said"] and out["main"] == normal
