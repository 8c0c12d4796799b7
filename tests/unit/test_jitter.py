"""JitterBuffer: reordering within the target always gives back the original stream; loss, lateness,
duplicates, wrap-around, SSRC change, other payload types and ptime mismatch each behave as documented."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mediacodecs.codec import PCMA
from mediacodecs.g711 import alaw_decode, alaw_encode, ulaw_decode
from mediasrv.rtp.jitter import JitterBuffer

N = 160
LONG = 10_000  # a high-water mark no test stream reaches: everything pushed at once stays


def payloads(k: int, seed: int = 0, size: int = N) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(k)]


def drain(jb: JitterBuffer, n: int = N, limit: int = 1000) -> list[np.ndarray]:
    out = []
    for _ in range(limit):
        frame = jb.pop(n)
        if frame is None:
            break
        out.append(frame.copy())
    return out


@st.composite
def jittered_streams(draw):
    target_frames = draw(st.integers(2, 4))
    max_delay = draw(st.integers(0, target_frames - 1))
    k = draw(st.integers(1, 60))
    delays = draw(st.lists(st.integers(0, max_delay), min_size=k, max_size=k))
    seq0 = draw(st.one_of(st.integers(0, 0xFFFF), st.integers(0xFFFF - 70, 0xFFFF)))
    ts0 = draw(st.one_of(st.integers(0, 0xFFFFFFFF), st.integers(0xFFFFFFFF - 70 * N, 0xFFFFFFFF)))
    tiebreak = draw(st.permutations(range(k)))
    return target_frames, delays, seq0, ts0, tiebreak


@settings(max_examples=300, deadline=None)
@given(jittered_streams())
def test_any_reordering_within_the_target_gives_the_original_stream(case):
    target_frames, delays, seq0, ts0, tiebreak = case
    k = len(delays)
    data = payloads(k, seed=k)
    jb = JitterBuffer(target_ms=20 * target_frames, high_water_ms=20 * (2 * target_frames + 1))
    arrivals: dict[int, list[int]] = {}
    for i, d in enumerate(delays):
        arrivals.setdefault(i + d, []).append(i)
    out: list[np.ndarray] = []
    for t in range(k + 10 * target_frames):
        for i in sorted(arrivals.get(t, []), key=lambda i: tiebreak[i]):  # any order within a slot
            jb.push((seq0 + i) & 0xFFFF, (ts0 + i * N) & 0xFFFFFFFF, data[i], t * 0.02, 0, 1234)
        frame = jb.pop(N)
        if frame is not None:
            out.append(frame.copy())
    expected = ulaw_decode(b"".join(data))
    assert np.array_equal(np.concatenate(out), expected)
    assert jb.stats.late == 0 and jb.stats.duplicates == 0 and jb.stats.resets == 0
    assert jb.stats.played == k


def test_duplicates_are_dropped_and_counted():
    data = payloads(10)
    jb = JitterBuffer(high_water_ms=LONG)
    for i, p in enumerate(data):
        jb.push(i, i * N, p, 0.0)
        jb.push(i, i * N, p, 0.0)
    assert jb.stats.duplicates == 10
    assert np.array_equal(np.concatenate(drain(jb)), ulaw_decode(b"".join(data)))


def test_lost_packet_plays_as_silence_and_a_late_one_is_dropped():
    data = payloads(8)
    jb = JitterBuffer(target_ms=40)
    out = []
    for i, p in enumerate(data):
        if i != 3:
            jb.push(i, i * N, p, 0.0)
        frame = jb.pop(N)
        if frame is not None:
            out.append(frame.copy())
    jb.push(3, 3 * N, data[3], 0.0)  # far too late: its samples went out as silence
    out += drain(jb)
    assert jb.stats.late == 1
    got = np.concatenate(out)
    assert len(got) == 8 * N
    assert not got[3 * N : 4 * N].any()
    assert np.array_equal(got[: 3 * N], ulaw_decode(b"".join(data[:3])))
    assert np.array_equal(got[4 * N :], ulaw_decode(b"".join(data[4:])))


def test_waits_for_target_then_underrun_waits_without_losing_what_follows():
    data = payloads(6)
    jb = JitterBuffer(target_ms=40)
    jb.push(0, 0, data[0], 0.0)
    assert jb.pop(N) is None  # 20 ms buffered < 40 ms target
    jb.push(1, N, data[1], 0.02)
    assert np.array_equal(jb.pop(N), ulaw_decode(data[0]))
    assert np.array_equal(jb.pop(N), ulaw_decode(data[1]))
    assert jb.pop(N) is None and jb.stats.underruns == 1  # dry: the position waits
    for i in (2, 3, 4, 5):
        jb.push(i, i * N, data[i], 0.2)
    assert np.array_equal(np.concatenate(drain(jb)), ulaw_decode(b"".join(data[2:])))
    assert jb.stats.late == 0


def test_sequence_and_timestamp_wrap():
    data = payloads(20)
    jb = JitterBuffer(high_water_ms=LONG)
    seq0, ts0 = 0xFFFF - 9, 0xFFFFFFFF - 9 * N + 1
    for i, p in enumerate(data):
        jb.push((seq0 + i) & 0xFFFF, (ts0 + i * N) & 0xFFFFFFFF, p, 0.0)
    assert np.array_equal(np.concatenate(drain(jb)), ulaw_decode(b"".join(data)))
    assert jb.stats.resets == 0


def test_ssrc_change_resets_onto_the_new_stream():
    a, b = payloads(4, seed=1), payloads(4, seed=2)
    jb = JitterBuffer(high_water_ms=LONG)
    for i, p in enumerate(a):
        jb.push(100 + i, 5000 + i * N, p, 0.0, 0, ssrc=1)
    first = jb.pop(N)
    assert np.array_equal(first, ulaw_decode(a[0]))
    for i, p in enumerate(b):  # a new source: unrelated seq and ts
        jb.push(9 + i, 77 + i * N, p, 0.1, 0, ssrc=2)
    assert jb.stats.resets == 1
    assert np.array_equal(np.concatenate(drain(jb)), ulaw_decode(b"".join(b)))


def test_timestamp_jump_resyncs():
    a, b = payloads(3, seed=1), payloads(3, seed=2)
    jb = JitterBuffer()
    for i, p in enumerate(a):
        jb.push(i, i * N, p, 0.0)
    drain(jb)
    for i, p in enumerate(b):  # same SSRC, timestamps 10 s further on (the sender restarted)
        jb.push(3 + i, 80000 + i * N, p, 1.0)
    assert jb.stats.resets == 1
    assert np.array_equal(np.concatenate(drain(jb)), ulaw_decode(b"".join(b)))


def test_other_payload_types_are_ignored_and_pcma_is_decoded():
    pcm = (np.sin(np.arange(4 * N) / 7) * 9000).astype(np.int16)
    enc = alaw_encode(pcm)
    jb = JitterBuffer(decoders={8: PCMA}, high_water_ms=LONG)
    for i in range(4):
        jb.push(i, i * N, enc[i * N : (i + 1) * N], 0.0, payload_type=8)
        jb.push(1000 + i, i * N, b"\x01\x0a\x00\xa0", 0.0, payload_type=101)  # telephone-event
        jb.push(2000 + i, i * N, b"\x40", 0.0, payload_type=13)  # comfort noise
        jb.push(3000 + i, i * N, bytes(N), 0.0, payload_type=0)  # PCMU not negotiated here
    assert jb.stats.ignored == 12
    assert np.array_equal(np.concatenate(drain(jb)), alaw_decode(enc))


def test_peer_ptime_30_played_out_in_20_ms_frames():
    data = payloads(8, size=240)
    jb = JitterBuffer(high_water_ms=LONG)
    for i, p in enumerate(data):
        jb.push(i, i * 240, p, 0.0)
    out = drain(jb)
    assert all(len(f) == N for f in out)
    assert np.array_equal(np.concatenate(out), ulaw_decode(b"".join(data)))


def test_burst_beyond_high_water_skips_back_to_target():
    data = payloads(20)
    jb = JitterBuffer(target_ms=40, high_water_ms=120)
    for i, p in enumerate(data):
        jb.push(i, i * N, p, 0.0)
    first = jb.pop(N)
    assert jb.stats.skipped_samples == 18 * N
    assert np.array_equal(first, ulaw_decode(data[18]))
    assert np.array_equal(jb.pop(N), ulaw_decode(data[19]))
    assert jb.pop(N) is None


def test_jitter_estimate_grows_with_irregular_arrivals():
    steady, shaky = JitterBuffer(), JitterBuffer()
    rng = np.random.default_rng(3)
    for i, p in enumerate(payloads(200)):
        steady.push(i, i * N, p, i * 0.02)
        shaky.push(i, i * N, p, i * 0.02 + rng.uniform(0, 0.01))
    assert steady.stats.jitter < 0.01
    assert shaky.stats.jitter > 10


def test_adaptive_target_grows_on_underruns_and_relaxes_when_stable():
    jb = JitterBuffer(target_ms=40, high_water_ms=120, max_target_ms=100, relax_s=1.0)
    data = payloads(400)
    i = 0

    def push(count: int) -> None:
        nonlocal i
        for _ in range(count):
            jb.push(i, i * N, data[i % 400], 0.0)
            i += 1

    push(2)
    for _ in range(5):  # a sender that stalls 60 ms, then bursts: underrun after underrun
        while jb.pop(N) is not None:
            pass
        push(6)
    assert jb.stats.underruns >= 4
    assert jb.target == 100 * 8 and jb.high_water == 180 * 8  # capped, margin kept
    steady_pops = 0
    while steady_pops < 120:  # then 2.4 s of steady flow: the target comes back down by 2 steps
        push(1)
        if jb.pop(N) is not None:
            steady_pops += 1
    assert jb.target == 100 * 8 - 2 * N
    assert jb.stats.target == jb.target
