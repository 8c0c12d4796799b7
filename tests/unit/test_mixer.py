"""Mixer on a simulated clock: N−1 mixing, each source popped once per packet time whatever the
number and phases of its listeners, saturation, transcoding, a leaving leg silent at once."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mediacodecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from mediasrv.media.mixer import Mixer

RATE = 8000


def tone(hz: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@dataclass
class Leg:
    name: str
    phase: int  # sub-slot (ms) within its packet time when it ticks
    ptime: int = 20
    codec: str = "PCMU"
    send: np.ndarray | None = None  # what this leg's far end says
    send_offset: int = 0  # ms within 20 ms when its packets arrive
    heard: list[np.ndarray | None] = field(default_factory=list)
    listening: bool = True
    hook: object = None
    source: object = None
    seq: int = 1000
    ts: int = 0


class Sim:
    def __init__(self) -> None:
        self.k = 0
        self.mixer = Mixer(now=lambda: self.k * 8)
        self.legs: dict[str, Leg] = {}

    def join(self, room: str, leg: Leg) -> None:
        self.legs[leg.name] = leg
        leg.source, leg.hook = self.mixer.join(room, leg.name, 8 * leg.ptime)

    def leave(self, name: str) -> None:
        self.mixer.leave(name)
        self.legs.pop(name)

    def run(self, ms: int) -> None:
        for _ in range(ms):
            k = self.k
            for leg in list(self.legs.values()):
                if leg.send is not None and k % 20 == leg.send_offset:
                    i = k // 20
                    chunk = leg.send[i * 160 : (i + 1) * 160]
                    if len(chunk) == 160:
                        enc = ulaw_encode(chunk) if leg.codec == "PCMU" else alaw_encode(chunk)
                        leg.source.push(leg.seq & 0xFFFF, leg.ts & 0xFFFFFFFF, 42, 0 if leg.codec == "PCMU" else 8, enc)
                    leg.seq += 1
                    leg.ts += 160
            for leg in list(self.legs.values()):
                if k % leg.ptime == leg.phase and leg.listening:
                    leg.heard.append(leg.hook(8 * leg.ptime))
            self.k += 1


def heard(leg: Leg) -> np.ndarray:
    frames = [f for f in leg.heard]
    first = next(i for i, f in enumerate(frames) if f is not None)
    out = []
    for f in frames[first:]:
        out.append(np.zeros(8 * leg.ptime, np.int16) if f is None else f)
    return np.concatenate(out)


def delay_of(h: np.ndarray, want: np.ndarray, max_delay: int = 800) -> int | None:
    """The delay (in samples) at which *want* appears, whole and exact, in what was heard."""
    for d in range(max_delay + 1):
        if np.array_equal(h[d : d + len(want)], want) and not h[:d].any():
            return d
    return None


def mix_delays(h: np.ndarray, parts: list[np.ndarray], span: int = 2400, skip: int = 800) -> tuple[int, ...] | None:
    """Per-part delays (multiples of the 1 ms sub-slot) that make *h* the saturated sum of *parts*."""
    target = h[skip : skip + span].astype(np.int32)
    a, b = parts
    for da in range(0, skip + 1, 8):
        pa = a[skip - da : skip - da + span].astype(np.int32)
        for db in range(0, skip + 1, 8):
            pb = b[skip - db : skip - db + span].astype(np.int32)
            if np.array_equal(np.clip(pa + pb, -32768, 32767), target):
                return da, db
    return None


def codec_roundtrip(pcm: np.ndarray, codec: str) -> np.ndarray:
    return ulaw_decode(ulaw_encode(pcm)) if codec == "PCMU" else alaw_decode(alaw_encode(pcm))


def test_bridge_each_hears_the_other_exactly_and_transcoded():
    sim = Sim()
    a440, b880 = tone(440, 1.0), tone(880, 1.0)
    a = Leg("a", phase=3, codec="PCMU", send=a440, send_offset=7)
    b = Leg("b", phase=15, codec="PCMA", send=b880, send_offset=1)
    sim.join("r", a)
    sim.join("r", b)
    sim.run(1200)
    ha, hb = heard(a), heard(b)
    want_a = codec_roundtrip(b880, "PCMA")  # B spoke PCMA; A's tick would encode it as PCMU
    want_b = codec_roundtrip(a440, "PCMU")
    assert delay_of(ha, want_a) is not None
    assert delay_of(hb, want_b) is not None
    # each source advanced once per 20 ms: 1200 ms -> 60 pops (give or take the one in flight)
    assert abs(a.source.pops - 60) <= 1 and abs(b.source.pops - 60) <= 1


def test_three_party_each_hears_the_other_two_summed():
    sim = Sim()
    x, y, z = tone(300, 0.6, 0.2), tone(700, 0.6, 0.2), tone(1100, 0.6, 0.2)
    legs = [Leg("x", 0, send=x, send_offset=5), Leg("y", 9, send=y, send_offset=5), Leg("z", 19, send=z, send_offset=5)]
    for leg in legs:
        sim.join("room", leg)
    sim.run(800)
    dx, dy, dz = (codec_roundtrip(s, "PCMU") for s in (x, y, z))
    assert mix_delays(heard(legs[0]), [dy, dz]) is not None
    assert mix_delays(heard(legs[1]), [dx, dz]) is not None
    assert mix_delays(heard(legs[2]), [dx, dy]) is not None
    assert mix_delays(heard(legs[0]), [dx, dy]) is None  # nobody hears themselves


def test_saturation_clips_instead_of_wrapping():
    sim = Sim()
    loud = np.full(4000, 30000, np.int16)
    legs = [Leg("p", 2, send=loud), Leg("q", 4, send=loud), Leg("l", 6)]
    for leg in legs:
        sim.join("room", leg)
    sim.run(400)
    h = heard(legs[2])
    assert h.max() == 32767 and h.min() >= 0  # 2 × ~30,000 would wrap negative in int16


def test_source_pops_once_per_packet_time_whatever_the_listeners():
    sim = Sim()
    speaker = Leg("s", 0, send=tone(500, 2.0), send_offset=0)
    sim.join("big", speaker)
    listeners = [Leg(f"l{i}", phase=i % 20) for i in range(9)]
    for leg in listeners:
        sim.join("big", leg)
    sim.run(2000)
    assert abs(speaker.source.pops - 100) <= 1
    want = codec_roundtrip(tone(500, 2.0), "PCMU")[: 160 * 90]
    for leg in listeners:  # every phase hears the whole stream, contiguous and exact
        assert delay_of(heard(leg), want) is not None


def test_listener_with_30_ms_ptime_hears_a_20_ms_source_continuously():
    sim = Sim()
    src = tone(440, 1.0)
    sim.join("r", Leg("s", 0, send=src, send_offset=4))
    listener = Leg("l", phase=17, ptime=30)
    sim.join("r", listener)
    sim.run(1200)
    h = heard(listener)
    want = codec_roundtrip(src, "PCMU")
    assert all(f is None or len(f) == 240 for f in listener.heard)
    assert delay_of(h, want) is not None


def test_leaving_leg_is_silent_at_once_and_the_others_keep_talking():
    sim = Sim()
    a = Leg("a", 1, send=tone(300, 2.0), send_offset=2)
    b = Leg("b", 8, send=tone(600, 2.0), send_offset=3)
    c = Leg("c", 14, send=tone(900, 2.0), send_offset=4)
    for leg in (a, b, c):
        sim.join("room", leg)
    sim.run(500)
    n_before = len(b.heard)
    sim.leave("a")
    sim.run(500)
    after_b, after_c = b.heard[n_before:], c.heard[n_before:]
    # from the very next tick, B hears only C and C only B
    want_c = codec_roundtrip(tone(900, 2.0), "PCMU")
    want_b = codec_roundtrip(tone(600, 2.0), "PCMU")
    start_b = np.concatenate(after_b)
    assert start_b.tobytes() in want_c.tobytes()
    assert np.concatenate(after_c).tobytes() in want_b.tobytes()
    assert sim.mixer.source("a") is None


def test_silent_room_gives_none_and_alone_hears_nothing():
    sim = Sim()
    lone = Leg("lone", 0, send=tone(440, 0.5))
    sim.join("r", lone)
    sim.run(200)
    assert all(f is None for f in lone.heard)
    quiet = Leg("quiet", 5)
    sim.join("r", quiet)
    sim.run(200)
    assert all(f is None for f in lone.heard)  # the newcomer sends nothing
    assert any(f is not None for f in quiet.heard)


def test_listener_back_after_a_pause_hears_live_audio_not_a_backlog():
    sim = Sim()
    talker = Leg("t", 0, send=tone(440, 3.0), send_offset=6)
    listener = Leg("l", 12)
    sim.join("r", talker)
    sim.join("r", listener)
    sim.run(500)
    listener.listening = False  # e.g. its own prompt plays with mix=false: nobody reads the talker
    sim.run(700)
    assert talker.source.jitter.buffered > 160 * 5  # a backlog piled up (bounded by the high-water mark)
    listener.listening = True
    sim.run(100)
    jb = talker.source.jitter
    assert jb.buffered <= jb.target + 160
    assert all(f is not None for f in listener.heard[-4:])
