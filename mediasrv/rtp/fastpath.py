"""The media clock's group runner: the C extension when it is built, else the Python reference.

The clock calls ``run_group(ticks)`` once per (period, phase) group of a sub-slot.  The Python
version (``clock.run_each``) calls every leg's ``tick()``.  The C version
(``mediasrv.rtp._fastsend.run_group``) does the same, except that a ``LegDriver.tick`` whose leg
is in the simple state -- one main playback being sliced (``Player.fast``) or nothing playing
(silence or skip) -- is done in C: header packed, one ``send()`` on the leg's connected socket,
and the same attributes written back.  Python keeps all state; the C side holds none, so legs
go in and out of the simple state with no syncing.  Measured in bench/fastsend_micro.py and
bench/pacing.py (bench/README.md).

The extension is built by ``pip install .`` / ``pip install -e .`` (setup.py, gcc + Python
headers).  Running from a source tree that was never built leaves it missing: the server then
logs a warning at startup and sends every packet from Python; tests/unit/test_fastsend.py
fails on Linux if it is not loaded.  ``MEDIASRV_FASTPATH=0`` turns it off (A/B benchmarks).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from types import ModuleType

log = logging.getLogger("mediasrv.media")

RunGroup = Callable[[tuple[Callable[[], None], ...]], "list[tuple[Callable[[], None], BaseException]] | None"]

_fastsend: ModuleType | None
try:
    from . import _fastsend
    IMPORT_ERROR: ImportError | None = None
except ImportError as exc:  # not built: see the module docstring
    _fastsend = None
    IMPORT_ERROR = exc

AVAILABLE = _fastsend is not None


def enabled() -> bool:
    return AVAILABLE and os.environ.get("MEDIASRV_FASTPATH", "1") not in ("0", "false", "no", "off")


def group_runner(driver_type: type, leg_type: type, fallback: RunGroup,
                 playback_type: type | None = None, player_type: type | None = None) -> RunGroup:
    """The runner for the clock: C with ``driver_type.tick`` (LegDriver.tick) registered, or *fallback*.

    *leg_type* is RtpLeg, *playback_type* Playback, *player_type* Player: these classes' ``__slots__`` are read at their
    offsets by the C side (generic attribute access for any other type).  A probe socket tells
    the C side whether it may read a socket's fd from the object (no ``fileno()`` call per packet).
    """
    if not enabled():
        if not AVAILABLE:
            log.warning("C fast path not built (%s): every packet is sent from Python; "
                        "run `pip install -e .` to build mediasrv.rtp._fastsend", IMPORT_ERROR)
        else:
            log.info("C fast path disabled by MEDIASRV_FASTPATH")
        return fallback
    assert _fastsend is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        _fastsend.register(driver_type.tick, socket.socket, driver_type, leg_type, playback_type, probe, player_type)
    return _fastsend.run_group


def counters() -> dict[str, int]:
    """Packets the C path sent (fast, silence) and ticks it handed to Python, since import."""
    return _fastsend.counters() if _fastsend is not None else {"fast": 0, "silence": 0, "python": 0}


def send_packet(fd: int, b1: int, seq: int, ts: int, ssrc: int, data: bytes, off: int, n: int) -> None:
    """One RTP packet (V=2, no CSRC): header + ``data[off:off+n]`` with one send(); OSError on failure."""
    if _fastsend is None:
        raise RuntimeError(f"mediasrv.rtp._fastsend is not built: {IMPORT_ERROR}")
    _fastsend.send_packet(fd, b1, seq, ts, ssrc, data, off, n)
