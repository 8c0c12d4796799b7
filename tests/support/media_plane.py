"""A started MediaPlane without SIP, with an event log and a capture per call."""

from __future__ import annotations

import asyncio
import random
import socket

from mediacodecs.codec import get
from mediasrv.calls import Call, CallState, Direction, NegotiatedMedia
from mediasrv.media import MediaPlane, MediaSettings
from mediasrv.probe import RtpCapture, bind_capture_with_rtcp

from .ports import free_block


class Plane:
    """A started MediaPlane with an event log and a probe per call."""

    def __init__(self, **kw) -> None:
        lo = free_block()
        self.events: list[tuple[str, str, dict]] = []
        self.timeouts: list[str] = []
        kw.setdefault("fetch_allow_cidrs", ["127.0.0.0/8"])  # the audio server is on loopback
        self.plane = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 200, **kw),
                                emit=lambda t, c, d: self.events.append((t, c, d)),
                                on_rtp_timeout=self.timeouts.append)
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

    async def wait_ended(self, playback_id: str, timeout: float = 5.0) -> dict:
        for _ in range(int(timeout / 0.01)):
            d = self.ended(playback_id)
            if d is not None:
                return d
            await asyncio.sleep(0.01)
        raise AssertionError(f"playback {playback_id} did not end")
