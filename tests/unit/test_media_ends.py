"""Media that ends and gives everything back: inactivity/hold timeouts, symmetric RTP, release on every path."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
from pathlib import Path

import pytest

from mediacodecs.codec import PCMU
from mediasrv.calls.registry import Call, CallState, Direction, NegotiatedMedia
from mediasrv.media import MediaPlane, MediaSettings
from mediasrv.rtp.probe import bind_capture
from tests.support.media_plane import Plane


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rtp(seq: int, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 160, 0x1234) + bytes(160)


async def _wait(pred, timeout: float = 3.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred() and loop.time() < deadline:
        await asyncio.sleep(0.02)
    return bool(pred())


def _call(plane: MediaPlane, remote: tuple[str, int] | None, **media) -> Call:
    # answered: before the answer (early media) the RTP timeout does not apply
    call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"{random.random()}@x", state=CallState.ANSWERED)
    call.local_rtp = plane.allocate(call)
    call.media = NegotiatedMedia(remote, PCMU, 0, **media)
    plane.media_changed(call)
    return call


async def test_symmetric_rtp_moves_sending_once_to_an_allowed_source(tmp_path: Path) -> None:
    p = Plane(data_dir=str(tmp_path), symmetric_rtp=True, media_deny_cidrs=["127.0.0.2/32"])
    await p.plane.start()
    sdp_addr, nat, denied, late = (bind_capture(), bind_capture(), bind_capture("127.0.0.2"), bind_capture())
    try:
        call = _call(p.plane, ("127.0.0.1", sdp_addr.port))
        assert await _wait(lambda: len(sdp_addr.packets) > 2)
        denied.sock.sendto(_rtp(1), call.local_rtp)  # a source the policy refuses: never latched
        nat.sock.sendto(_rtp(2, pt=8), call.local_rtp)  # not the negotiated payload type: not RTP of this call
        await asyncio.sleep(0.2)
        stats = p.plane.leg_stats(call.call_id)
        assert stats["latched"] == 0 and stats["dropped_foreign"] == 2 and not nat.packets
        nat.sock.sendto(_rtp(3), call.local_rtp)
        assert await _wait(lambda: len(nat.packets) > 2)
        n_sdp = len(sdp_addr.packets)
        late.sock.sendto(_rtp(4), call.local_rtp)  # once per negotiated remote: no second move
        await asyncio.sleep(0.2)
        stats = p.plane.leg_stats(call.call_id)
        assert stats["latched"] == 1 and stats["packets_received"] == 1 and not late.packets
        assert len(sdp_addr.packets) <= n_sdp + 1  # at most one already in flight
        assert p.plane.metrics()["media_events"]["latched"] == 1
    finally:
        await p.plane.stop()
        for c in (sdp_addr, nat, denied, late):
            c.close()


async def test_without_symmetric_rtp_foreign_sources_never_redirect(tmp_path: Path) -> None:
    p = Plane(data_dir=str(tmp_path))
    assert p.plane.settings.symmetric_rtp is False  # the default
    await p.plane.start()
    sdp_addr, other = bind_capture(), bind_capture()
    try:
        call = _call(p.plane, ("127.0.0.1", sdp_addr.port))
        other.sock.sendto(_rtp(1), call.local_rtp)
        await asyncio.sleep(0.2)
        assert not other.packets and p.plane.leg_stats(call.call_id)["dropped_foreign"] == 1
    finally:
        await p.plane.stop()
        sdp_addr.close()
        other.close()


async def test_held_calls_get_the_hold_timeout(tmp_path: Path) -> None:
    p = Plane(data_dir=str(tmp_path), rtp_timeout_s=0.4, rtp_hold_timeout_s=30.0)
    await p.plane.start()
    cap = bind_capture()
    try:
        talking = _call(p.plane, ("127.0.0.1", cap.port))
        held = _call(p.plane, ("127.0.0.1", cap.port), send_enabled=False)  # peer said a=sendonly
        parked = _call(p.plane, None, send_enabled=False)  # c=0.0.0.0
        assert await _wait(lambda: p.timeouts == [talking.call_id], 4.0)
        await asyncio.sleep(0.6)
        assert p.timeouts == [talking.call_id]  # the held and parked calls are within their 30 s
        assert p.plane.metrics()["media_events"]["rtp_timeouts"] == 1
        assert held.call_id != parked.call_id
    finally:
        await p.plane.stop()
        cap.close()


async def test_outbound_early_media_is_not_timed_out_until_answered(tmp_path: Path) -> None:
    p = Plane(data_dir=str(tmp_path), rtp_timeout_s=0.4)
    await p.plane.start()
    cap = bind_capture()
    try:
        call = Call(Direction.OUTBOUND, "sip:a@x", "sip:b@x", f"{random.random()}@x", state=CallState.RINGING)
        call.local_rtp = p.plane.allocate(call)
        call.media = NegotiatedMedia(("127.0.0.1", cap.port), PCMU, 0)
        p.plane.media_changed(call)  # a 183 with SDP: early media, no RTP from the far end
        await asyncio.sleep(1.2)
        assert p.timeouts == []
        call.state = CallState.ANSWERED  # the 200 came (the SIP layer applies the media again, then answers)
        p.plane.media_changed(call)
        assert await _wait(lambda: p.timeouts == [call.call_id], 4.0)
    finally:
        await p.plane.stop()
        cap.close()


async def test_inbound_early_media_stream_goes_on_through_the_answer_and_times_out_from_it(tmp_path: Path) -> None:
    p = Plane(data_dir=str(tmp_path), rtp_timeout_s=0.4)
    await p.plane.start()
    cap = bind_capture()
    try:
        call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"{random.random()}@x", state=CallState.RINGING)
        call.local_rtp = p.plane.allocate(call)
        call.media = NegotiatedMedia(("127.0.0.1", cap.port), PCMU, 0)
        p.plane.media_changed(call)  # our 183 with SDP: RTP starts, the caller sends none
        await asyncio.sleep(1.2)
        assert p.timeouts == [] and len(cap.packets) > 30
        loop = asyncio.get_running_loop()
        call.state = CallState.ANSWERED  # the 200 repeats the 183's SDP: the SIP layer applies the same media
        p.plane.media_changed(call)
        answered_at = loop.time()
        assert await _wait(lambda: p.timeouts == [call.call_id], 4.0)
        assert loop.time() - answered_at >= 0.4, "the inactivity timeout counts from the answer"
        pkts = cap.packets
        assert len({q.ssrc for q in pkts}) == 1 and sum(q.marker for q in pkts) == 1 and pkts[0].marker
        assert all((b.seq - a.seq) & 0xFFFF == 1 and (b.ts - a.ts) & 0xFFFFFFFF == 160
                   for a, b in zip(pkts, pkts[1:], strict=False))
    finally:
        await p.plane.stop()
        cap.close()


def test_timeouts_are_on_by_default() -> None:
    s = MediaSettings()
    assert (s.rtp_timeout_s, s.rtp_hold_timeout_s, s.symmetric_rtp) == (30.0, 300.0, False)


async def test_release_gives_back_every_fd_and_port_whatever_the_remote(tmp_path: Path) -> None:
    p = Plane(data_dir=str(tmp_path))
    await p.plane.start()
    fds, tasks = _fds(), len(asyncio.all_tasks())
    calls: list[Call] = []
    try:
        for _ in range(10):
            calls.append(_call(p.plane, ("127.0.0.1", 65535)))  # RTP to 65535 is fine; there is no RTCP port
        for bad in (("127.0.0.1\x00x", 4000), ("169.254.169.254", 4000), ("127.0.0.1", 65536), ("::1", 4000),
                    ("media.example.com", 4000)):
            call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"{random.random()}@x")
            call.local_rtp = p.plane.allocate(call)
            call.media = NegotiatedMedia(bad, PCMU, 0)
            with pytest.raises(ValueError, match="refused"):
                p.plane.media_changed(call)
            assert p.plane.leg_stats(call.call_id)["packets_sent"] == 0
            calls.append(call)
        await asyncio.sleep(0.1)
        assert p.plane.ports.in_use == 15 and _fds() >= fds + 15 * 2
    finally:
        for call in calls:
            p.plane.release(call)  # never raises
            p.plane.release(call)  # twice is harmless
        await asyncio.sleep(0.05)
        after = (_fds(), p.plane.ports.in_use, len(asyncio.all_tasks()))
        await p.plane.stop()
    assert after == (fds, 0, tasks)


def test_allocation_failing_half_way_gives_back_the_sockets_and_the_port(tmp_path: Path) -> None:
    """allocate() outside a running loop fails after the sockets were bound: nothing may stay behind."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        lo = s.getsockname()[1] & ~1
    plane = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 20, data_dir=str(tmp_path)), emit=lambda *a: None)
    fds = _fds()
    for _ in range(5):
        call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"{random.random()}@x")
        with pytest.raises(RuntimeError):
            plane.allocate(call)
    assert (_fds(), plane.ports.in_use, plane.metrics()["legs"]) == (fds, 0, 0)
