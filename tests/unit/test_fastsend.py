"""The C fast path (mediasrv.rtp._fastsend) against the reference, LegDriver.tick in Python.

Two twin legs with the same SSRC/seq/ts and the same player state, each on real loopback
sockets: one ticked by Python (LegDriver.tick), one by the C group runner (the leg's packet
state in the group, as the media plane schedules it).  What their receivers get must be
byte-identical, and so must every counter, Playback field and event afterwards.
"""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import pytest

from mediacodecs.codec import PCMU
from mediacodecs.g711 import ulaw_encode
from mediasrv.content.source import Media
from mediasrv.media import MediaPlane, MediaSettings
from mediasrv.media.clock import run_each
from mediasrv.media.plane import LegDriver
from mediasrv.media.player import Player, PlayRequest, new_playback
from mediasrv.rtp import fastpath
from mediasrv.rtp.leg import PortAllocator, RtpLeg

run_group = fastpath.group_runner(run_each)
PORTS = PortAllocator("127.0.0.1", 36000, 36998)


def test_extension_is_loaded_on_linux() -> None:
    assert fastpath.AVAILABLE, f"mediasrv.rtp._fastsend is not built ({fastpath.IMPORT_ERROR}); pip install -e ."
    assert run_group is not run_each


class Twin:
    """One leg: real sockets, a receiver it is connected to, its player's events."""

    def __init__(self, ssrc: int, seq: int, ts: int, send_silence: bool = True, ptime: int = 20) -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setblocking(False)
        rtp, rtcp = PORTS.bind_pair()
        self.leg = RtpLeg("c", rtp, rtcp)
        self.leg.ssrc, self.leg.seq, self.leg.timestamp = ssrc, seq, ts
        self.leg.set_remote(self.rx.getsockname())
        self.events: list[tuple] = []
        self.player = Player(PCMU, self._on_event)
        self.driver = LegDriver(self.leg, self.player, send_silence)
        self.driver.configure(PCMU, 0, ptime)

    def _on_event(self, type_: str, pb) -> None:
        self.events.append((type_, pb.state, pb.samples_played, pb.last_seq, pb.last_ts))

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.rx.recv(4096))
            except (BlockingIOError, ConnectionRefusedError):
                return out

    def state(self) -> dict:
        leg, pb = self.leg, self.player.current
        return {
            "seq": leg.seq, "ts": leg.timestamp, "marker_next": leg.marker_next, "packets_sent": leg.packets_sent,
            "bytes_sent": leg.bytes_sent, "send_errors": leg.send_errors, "events": list(self.events),
            "pb": None if pb is None else (pb.state, pb.offset, pb.samples_played, pb.last_seq, pb.last_ts),
        }

    def close(self) -> None:
        PORTS.free(self.leg.port)
        self.leg.close(send_bye=False)
        self.rx.close()


@pytest.fixture
def twins():
    made: list[Twin] = []

    def make(**kw) -> tuple[Twin, Twin]:
        pair = (Twin(0xDEADBEEF, 1000, 123456, **kw), Twin(0xDEADBEEF, 1000, 123456, **kw))
        made.extend(pair)
        return pair

    yield make
    for t in made:
        t.close()


def media(samples: int, seed: int = 1) -> Media:
    pcm = np.random.default_rng(seed).integers(-12000, 12000, samples).astype(np.int16)
    return Media("x", pcm, {"PCMU": ulaw_encode(pcm)})


def play(twin: Twin, m: Media, **kw) -> None:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(m)
    twin.player.enqueue(new_playback("c", PlayRequest(url="u", **kw), [fut]))


def step(py: Twin, c: Twin, ticks: int) -> tuple[list[bytes], list[bytes]]:
    for _ in range(ticks):
        py.driver.tick()
        assert run_group((c.leg,)) is None
    return py.received(), c.received()


def delta(before: dict[str, int]) -> dict[str, int]:
    now = fastpath.counters()
    return {k: now[k] - before[k] for k in now}


async def test_playback_through_loops_and_end_is_identical(twins) -> None:
    py, c = twins()
    m = media(160 * 5 + 37)  # the end falls inside a packet: Python pads it with silence
    for t in (py, c):
        play(t, m, loop=2)
    before = fastpath.counters()
    a, b = step(py, c, 20)
    assert len(a) == 20 and a == b
    assert py.state() == c.state()
    assert [e[0] for e in c.events] == ["playback.started", "playback.ended"]
    d = delta(before)
    assert d["fast"] >= 6  # the middle of each loop went through C ...
    assert d["python"] >= 2  # ... the loop boundary and the end through Python
    assert d["silence"] >= 5  # afterwards: silence from C
    assert a[0][1] & 0x80 and not any(p[1] & 0x80 for p in a[1:])  # one talkspurt: marker on the first


async def test_seq_and_timestamp_wrap(twins) -> None:
    py, c = twins()
    for t in (py, c):
        t.leg.seq, t.leg.timestamp = 0xFFFE, 0xFFFFFF00
        play(t, media(160 * 10))
    a, b = step(py, c, 6)
    assert a == b
    seqs = [int.from_bytes(p[2:4], "big") for p in b]
    tss = [int.from_bytes(p[4:8], "big") for p in b]
    assert seqs == [0xFFFE, 0xFFFF, 0, 1, 2, 3]
    assert tss == [(0xFFFFFF00 + 160 * i) & 0xFFFFFFFF for i in range(6)]
    assert py.state() == c.state()
    assert c.player.current.last_seq == 3 and c.player.current.last_ts == tss[-1]


async def test_marker_after_a_gap_without_silence(twins) -> None:
    py, c = twins(send_silence=False)
    before = fastpath.counters()
    a, b = step(py, c, 3)  # nothing playing, no silence: time passes, nothing is sent
    assert a == b == []
    assert py.state() == c.state() and c.leg.timestamp == (123456 + 480) and c.leg.marker_next
    for t in (py, c):
        play(t, media(160 * 8))
    a, b = step(py, c, 4)
    assert a == b and len(b) == 4
    assert b[0][1] == 0x80 and all(p[1] == 0 for p in b[1:])
    assert int.from_bytes(b[0][4:8], "big") == 123456 + 480
    assert py.state() == c.state()
    assert delta(before)["fast"] >= 3


async def test_states_off_the_fast_path_go_through_python(twins) -> None:
    py, c = twins()
    for t in (py, c):
        play(t, media(160 * 20), volume_db=-6.0)  # not 0 dB: mixed in Python
    before = fastpath.counters()
    a, b = step(py, c, 5)
    assert a == b and len(b) == 5
    assert py.state() == c.state()
    assert delta(before) == {"fast": 0, "silence": 0, "python": 5}


async def test_a_loading_playback_goes_through_python_then_plays_in_c(twins) -> None:
    py, c = twins()
    loop = asyncio.get_running_loop()
    futs = [loop.create_future(), loop.create_future()]
    for t, fut in zip((py, c), futs):
        t.player.enqueue(new_playback("c", PlayRequest(url="u"), [fut]))
    before = fastpath.counters()
    a, b = step(py, c, 3)  # still loading: busy, not fast -- the player sends silence and counts underruns
    assert a == b and len(b) == 3
    assert delta(before) == {"fast": 0, "silence": 0, "python": 3}
    m = media(160 * 10)
    for fut in futs:
        fut.set_result(m)
    a, b = step(py, c, 6)
    assert a == b and py.state() == c.state()
    assert delta(before)["fast"] >= 4


async def test_large_packets_and_bytearray_data(twins) -> None:
    py, c = twins(ptime=160)  # 1,280-byte payloads: the two-iovec sendmsg path
    m = media(1280 * 6)
    m.encoded["PCMU"] = bytearray(m.encoded["PCMU"])  # a streaming source's growing buffer
    for t in (py, c):
        play(t, m)
    before = fastpath.counters()
    a, b = step(py, c, 4)
    assert a == b and len(b) == 4 and len(b[0]) == 12 + 1280
    assert py.state() == c.state()
    assert delta(before)["fast"] >= 3


async def test_send_errors_counted_the_same(twins) -> None:
    py, c = twins()
    for t in (py, c):
        play(t, media(160 * 40))
        t.rx.close()  # port unreachable: the connected socket reports ECONNREFUSED on later sends
    for _ in range(10):
        py.driver.tick()
        run_group((c.leg,))
    assert py.state() == c.state()
    assert c.leg.send_errors > 0 and c.leg.packets_sent + c.leg.send_errors == 10


async def test_a_failing_tick_is_reported_and_the_group_goes_on(twins) -> None:
    py, c = twins()

    def broken() -> None:
        raise RuntimeError("boom")

    failed = run_group((broken, c.leg, py.driver.tick))
    assert failed is not None and len(failed) == 1
    assert failed[0][0] is broken and isinstance(failed[0][1], RuntimeError)
    assert len(c.received()) == 1 and len(py.received()) == 1


def test_send_packet_matches_the_header_layout() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    try:
        fastpath.send_packet(tx.fileno(), 0x88, 0xABCD, 0x01020304, 0xCAFEBABE, b"0123456789", 2, 5)
        assert rx.recv(100) == bytes([0x80, 0x88, 0xAB, 0xCD, 1, 2, 3, 4, 0xCA, 0xFE, 0xBA, 0xBE]) + b"23456"
    finally:
        rx.close()
        tx.close()


def test_media_plane_uses_the_c_runner(tmp_path) -> None:
    plane = MediaPlane(MediaSettings(data_dir=str(tmp_path)), emit=lambda *a: None)
    assert plane.clock.core.run_group is run_group


def test_the_leg_is_its_packet_state(twins) -> None:
    """The C tick reads the leg's own struct: no attribute offsets, no socket probing."""
    py, c = twins()
    assert isinstance(c.leg, fastpath._fastsend.PacketState)
    assert c.leg.fd == c.leg.send_sock.fileno() >= 0  # the connected socket, set by set_remote
    assert c.leg.on_tick == c.driver.tick  # what C does not do itself
    for bad in ({"seq": 0x10000}, {"timestamp": -1}, {"ssrc": 1 << 32}, {"payload_type": 128}):
        (name, value), = bad.items()
        with pytest.raises(ValueError):
            setattr(c.leg, name, value)  # the struct always holds a valid header
    c.leg.close(send_bye=False)
    assert c.leg.fd == -1 and c.leg.on_tick is None


async def test_a_group_larger_than_one_batch(twins) -> None:
    legs = [Twin(0x1000 + i, i, i * 1000) for i in range(70)]  # 64 packets per batch, then the rest
    try:
        m = media(160 * 10)
        for t in legs:
            play(t, m)
        assert run_group(tuple(t.leg for t in legs)) is None
        assert run_group(tuple(t.leg for t in legs)) is None
        for i, t in enumerate(legs):
            got = t.received()
            assert [int.from_bytes(p[2:4], "big") for p in got] == [i, i + 1]
            assert [int.from_bytes(p[8:12], "big") for p in got] == [0x1000 + i] * 2
            assert got[1][12:] == m.encoded["PCMU"][160:320]
            assert (t.leg.packets_sent, t.leg.bytes_sent, t.leg.seq) == (2, 320, i + 2)
    finally:
        for t in legs:
            t.close()
