"""A leg's packet state and the media clock's group runner: the C extension, or Python without it.

``PacketState`` (``mediasrv.rtp._fastsend``) is what one leg sends: header fields, the connected
socket's fd, the send counters, the silence to send, and the slice of pre-encoded audio the player
hands over.  ``RtpLeg`` subclasses it, so the leg owns it; ``LegDriver.tick`` (the Python path)
and the C ``run_group`` read and write the same fields.

The clock calls ``run_group(items)`` once per (period, phase) group of a sub-slot.  The C version
ticks a ``PacketState`` item itself when the tick is simple -- slice the handed-over audio, send
silence, or skip -- and calls its ``on_tick`` (LegDriver.tick) otherwise; any other item is called.
The Python version (``clock.run_each``) calls every item.  Measured in bench/fastsend_micro.py and
bench/pacing.py (bench/README.md).

The extension is built by ``pip install .`` / ``pip install -e .`` (setup.py, gcc + Python
headers).  Running from a source tree that was never built leaves it missing: ``PacketState`` is
then a plain Python class with the same fields, the server logs a warning at startup and sends
every packet from Python; tests/unit/test_fastsend.py fails on Linux if it is not loaded.
``MEDIASRV_FASTPATH=0`` turns the C runner off (A/B benchmarks); the state is the same either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

log = logging.getLogger("mediasrv.media")

# One clock group: callables and packet states in, the ones that raised (item, exception) out (or None).
RunGroup = Callable[[tuple[Callable[[], object], ...]], "list[tuple[Callable[[], object], Exception]] | None"]

_fastsend: ModuleType | None
try:
    from . import _fastsend
    IMPORT_ERROR: ImportError | None = None
except ImportError as exc:  # not built: see the module docstring
    _fastsend = None
    IMPORT_ERROR = exc

AVAILABLE = _fastsend is not None


class _PyPacketState:
    """The extension's PacketState fields, for a source tree that was never built (no logic here)."""

    __slots__ = ("fd", "seq", "marker_next", "busy", "ssrc", "timestamp", "payload_type", "samples", "slice_data",
                 "slice_offset", "slice_end", "slice_played", "slice_last_seq", "slice_last_ts", "silence",
                 "packets_sent", "bytes_sent", "send_errors", "on_tick")

    def __init__(self) -> None:
        self.fd, self.seq, self.ssrc, self.timestamp, self.payload_type, self.samples = -1, 0, 0, 0, 0, 160
        self.marker_next, self.busy = True, False
        self.slice_data: bytes | bytearray | None = None
        self.slice_offset = self.slice_end = self.slice_played = 0
        self.slice_last_seq: int | None = None
        self.slice_last_ts: int | None = None
        self.silence: bytes | None = None
        self.packets_sent = self.bytes_sent = self.send_errors = 0
        self.on_tick: Callable[[], object] | None = None

    def __call__(self) -> object:  # a tick: without the extension it is all Python
        if self.on_tick is None:
            raise TypeError("a PacketState on the clock needs on_tick")
        return self.on_tick()


if TYPE_CHECKING:
    from ._fastsend import PacketState
elif _fastsend is not None:
    PacketState = _fastsend.PacketState
else:
    PacketState = _PyPacketState


def enabled() -> bool:
    return AVAILABLE and os.environ.get("MEDIASRV_FASTPATH", "1") not in ("0", "false", "no", "off")


def group_runner(fallback: RunGroup) -> RunGroup:
    """The runner for the clock: the C ``run_group``, or *fallback* when not built or turned off."""
    if not enabled():
        if not AVAILABLE:
            log.warning("C fast path not built (%s): every packet is sent from Python; "
                        "run `pip install -e .` to build mediasrv.rtp._fastsend", IMPORT_ERROR)
        else:
            log.info("C fast path disabled by MEDIASRV_FASTPATH")
        return fallback
    assert _fastsend is not None
    run: RunGroup = _fastsend.run_group
    return run


def counters() -> dict[str, int]:
    """Packets the C path sent (fast, silence) and ticks it handed to Python, since import."""
    return _fastsend.counters() if _fastsend is not None else {"fast": 0, "silence": 0, "python": 0}


def send_packet(fd: int, b1: int, seq: int, ts: int, ssrc: int, data: bytes, off: int, n: int) -> None:
    """One RTP packet (V=2, no CSRC): header + ``data[off:off+n]`` with one send(); OSError on failure."""
    if _fastsend is None:
        raise RuntimeError(f"mediasrv.rtp._fastsend is not built: {IMPORT_ERROR}")
    _fastsend.send_packet(fd, b1, seq, ts, ssrc, data, off, n)
