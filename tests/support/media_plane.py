"""A started MediaPlane without SIP, with an event log and a capture per call."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket

from mediacodecs.codec import get
from mediasrv.calls.registry import Call, CallState, Direction, NegotiatedMedia
from mediasrv.media import MediaParts, MediaPlane, MediaSettings
from mediasrv.media.clock import MediaClock
from mediasrv.rtp.probe import RtpCapture, bind_capture_with_rtcp

from .ports import free_block


def advance(plane: MediaPlane, ms: int) -> None:
    """Fake time: run the next *ms* one-millisecond sub-slots of a clock the test never started, at once."""
    core = plane.clock.core
    core.run_until(core.deadline(core.next_tick + ms - 1))


async def loaded(pb) -> None:
    """Wait (in loop turns, not clock time) until every source of *pb* is completely decoded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    for fut in pb.futures:
        media = await asyncio.wait_for(fut, 10.0)
        while not media.complete and loop.time() < deadline:  # the loader finishes off the clock
            await asyncio.sleep(0.001)
        assert media.complete


class Plane:
    """A started MediaPlane with an event log and a probe per call.

    With *clock* (one the test never starts) the plane runs on fake time: its legs send only in
    :meth:`advance`.
    """

    def __init__(self, clock: MediaClock | None = None, **kw) -> None:
        lo = free_block()
        self.events: list[tuple[str, str, dict]] = []
        self.timeouts: list[str] = []
        kw.setdefault("fetch_allow_cidrs", ["127.0.0.0/8"])  # the audio server is on loopback
        settings = MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 200, **kw)
        parts = MediaParts.from_settings(settings)
        self.plane = MediaPlane(settings, emit=lambda t, c, d: self.events.append((t, c, d)),
                                on_rtp_timeout=self.timeouts.append,
                                parts=parts if clock is None else dataclasses.replace(parts, clock=clock))
        self.captures: list[RtpCapture] = []
        self.rtcp_socks: dict[int, socket.socket] = {}

    async def call(self, codec: str = "PCMU", ptime: int = 20) -> tuple[Call, RtpCapture]:
        cap, rtcp = bind_capture_with_rtcp()  # the RTCP port is reserved now, not raced for later
        self.rtcp_socks[cap.port] = rtcp
        self.captures.append(cap)
        # answered, as the SIP layer has it once media is negotiated (early media is exempt from the RTP timeout)
        call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"{random.random()}@x", state=CallState.ANSWERED)
        call.media = NegotiatedMedia(("127.0.0.1", cap.port), get(codec), {"PCMU": 0, "PCMA": 8}[codec], ptime_ms=ptime)
        call.local_rtp = self.plane.allocate(call)  # as the SIP layer does
        self.plane.media_changed(call)
        return call, cap

    def ended(self, playback_id: str) -> dict | None:
        for t, _, d in self.events:
            if t == "playback.ended" and d["playback_id"] == playback_id:
                return d
        return None

    def advance(self, ms: int) -> None:
        """Fake time: run the clock's next *ms* one-millisecond sub-slots at once."""
        advance(self.plane, ms)

    @staticmethod
    async def loaded(pb) -> None:
        await loaded(pb)

    async def wait_ended(self, playback_id: str, timeout: float = 5.0) -> dict:
        for _ in range(int(timeout / 0.01)):
            d = self.ended(playback_id)
            if d is not None:
                return d
            await asyncio.sleep(0.01)
        raise AssertionError(f"playback {playback_id} did not end")
