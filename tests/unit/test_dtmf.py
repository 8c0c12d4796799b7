"""RFC 4733 detector (loss, duplication, reordering, bad input), the sender's packet plan, INFO bodies, tones."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediasrv.content.tones import DTMF_FREQS, ToneError, dtmf_pcm, tone_pcm
from mediasrv.media.dtmf import DIGITS, DtmfSender, TelephoneEventDetector
from mediasrv.sip.info import InfoError, parse_info

N = 160  # samples per 20 ms packet


def payload(event: int, end: bool, duration: int, volume: int = 10) -> bytes:
    """Written here from RFC 4733 §2.3, independently of the sender."""
    return struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)


def press_packets(ts: int, event: int, updates: int) -> list[tuple[int, bytes, str]]:
    """One key press as a conforming sender puts it on the wire: updates, then three end packets."""
    pkts = [(ts, payload(event, False, k * N), "update") for k in range(1, updates + 1)]
    final = (updates + 1) * N
    pkts += [(ts, payload(event, True, final), "end")] * 3
    return pkts


def run(det: TelephoneEventDetector, arrivals: list[tuple[int, bytes]], step: float = 0.02):
    ends, starts = [], []
    now = 0.0
    for ts, p in arrivals:
        now += step
        for sig in det.poll(now) + det.feed(ts, p, now):
            (ends if sig.kind == "end" else starts).append(sig)
    for sig in det.poll(now + 10):
        (ends if sig.kind == "end" else starts).append(sig)
    return starts, ends


presses_st = st.lists(st.tuples(st.integers(0, 15), st.integers(1, 12)), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(presses=presses_st, data=st.data(), ts0=st.integers(0, 2**32 - 1))
def test_each_press_reported_once_under_loss_duplication_and_reordering(presses, data, ts0):
    wire: list[tuple[int, bytes, int, str]] = []  # (ts, payload, press index, kind)
    press_of_ts: dict[int, int] = {}
    ts = ts0
    for i, (event, updates) in enumerate(presses):
        press_of_ts[ts & 0xFFFFFFFF] = i
        for t, p, kind in press_packets(ts & 0xFFFFFFFF, event, updates):
            wire.append((t, p, i, kind))
        wire += [(-1, b"", i, "gap")] * 5  # audio in between: not telephone-events, not fed
        ts += (updates + 3 + 5) * N
    n = len(wire)
    lost = data.draw(st.lists(st.booleans(), min_size=n, max_size=n).map(
        lambda bits: bits if sum(bits) < n else [False] * n), label="lost")
    lost = [b and data.draw(st.floats(0, 1)) < 0.3 for b in lost]  # at most ~30 % lost
    dup = data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="duplicated")
    arrivals = []
    for (t, p, i, kind), gone, twice in zip(wire, lost, dup, strict=True):
        if gone or kind == "gap":
            continue
        arrivals += [(t, p, i, kind)] * (2 if twice else 1)
    swaps = data.draw(st.lists(st.integers(0, max(0, len(arrivals) - 2)), max_size=6), label="swaps")
    reordered = bool(swaps) and len(arrivals) > 1
    for k in swaps:
        if k + 1 < len(arrivals):
            arrivals[k], arrivals[k + 1] = arrivals[k + 1], arrivals[k]

    det = TelephoneEventDetector()
    starts, ends = run(det, [(t, p) for t, p, _, _ in arrivals])

    survived = sorted({i for _, _, i, _ in arrivals})
    # each surviving press reported once; with reordering across presses the reports may come out of
    # press order, so a report is matched to its press by its event timestamp, not by position
    reported = [press_of_ts[e.timestamp] for e in ends]
    assert sorted(reported) == survived, (ends, survived)
    if not reordered:
        assert reported == survived
    assert [e.digit for e in ends] == [DIGITS[presses[i][0]] for i in reported]
    assert len(starts) == len(ends)
    assert det.stats.malformed == det.stats.absurd == det.stats.flood == det.stats.inconsistent == 0
    for e, i in zip(ends, reported, strict=True):
        true_ms = (presses[i][1] + 1) * N // 8
        assert 0 <= e.duration_ms <= true_ms
        end_arrived = any(k == "end" and j == i for _, _, j, k in arrivals)
        if end_arrived and not reordered:
            assert e.duration_ms == true_ms and e.how == "end"


def test_lost_end_packets_reported_on_next_event_and_on_timeout():
    det = TelephoneEventDetector(timeout_s=0.5)
    out = det.feed(1000, payload(5, False, 160), 0.0) + det.feed(1000, payload(5, False, 320), 0.02)
    assert [s.kind for s in out] == ["start"]
    out = det.feed(5000, payload(7, False, 160), 0.2)  # a new event timestamp: 5 was released, ends lost
    assert [(s.kind, s.digit, s.duration_ms, s.how) for s in out] == [("end", "5", 40, "next_event"), ("start", "7", 0, "")]
    assert det.poll(0.5) == []
    [end] = det.poll(0.71)
    assert (end.digit, end.duration_ms, end.how) == ("7", 20, "timeout")
    assert det.feed(5000, payload(7, True, 800), 0.8) == []  # its end arriving late: not reported again
    assert det.stats.duplicates == 1 and det.stats.presses == 2 and det.stats.ended_without_end == 2


def test_malformed_payloads_are_counted_and_dropped():
    det = TelephoneEventDetector()
    assert det.feed(1, b"\x01\x0a", 0.0) == []  # short
    assert det.feed(1, payload(1, False, 160) + b"\x00", 0.0) == []  # not a multiple of 4
    assert det.feed(2, payload(20, False, 160), 0.0) == []  # not a DTMF key (a modem tone)
    assert det.feed(3, payload(1, True, 0), 0.0) == []  # an end of zero duration
    assert det.feed(4, payload(1, False, 40000), 0.0) == []  # 5 s already at the first packet
    assert det.stats.malformed == 2 and det.stats.unsupported == 1 and det.stats.absurd == 2
    det.feed(10, payload(1, False, 160), 0.1)
    assert det.feed(10, payload(2, False, 320), 0.12) == []  # the key changed within one event
    assert det.stats.inconsistent == 1
    [end] = det.feed(10, payload(1, True, 480), 0.14)
    assert (end.digit, end.duration_ms) == ("1", 60)


def test_packed_events_in_one_packet():
    """RFC 4733 §2.5.1.5: back-to-back events in one packet, each at the previous one's timestamp + duration."""
    det = TelephoneEventDetector()
    out = det.feed(8000, payload(1, True, 800) + payload(2, True, 800), 0.0)
    assert [(s.kind, s.digit, s.timestamp) for s in out] == [
        ("start", "1", 8000), ("end", "1", 8000), ("start", "2", 8800), ("end", "2", 8800)]


def test_flood_is_limited():
    det = TelephoneEventDetector()
    ends = []
    for i in range(2000):  # 2,000 distinct one-packet presses within one second
        ends += [s for s in det.feed(i * 1000, payload(i % 16, True, 160), i / 2000) if s.kind == "end"]
    assert det.stats.flood > 1500
    assert len(ends) <= 41  # a burst of 20, then 20 a second
    assert det.open_events == 0


def test_sender_packet_plan():
    s = DtmfSender("1#", 100, 60, N, 0, b"\xff" * N, te_pt=101)
    pkts = []
    ts = 5000
    while (p := s.next(ts)) is not None:
        pkts.append(p)
        ts += N
    te = [p for p in pkts if p.payload_type == 101]
    first = [p for p in te if p.payload[0] == 1]
    assert {p.timestamp for p in first} == {5000}
    assert first[0].marker and not any(p.marker for p in first[1:])
    durs = [struct.unpack("!H", p.payload[2:])[0] for p in first]
    ends = [p for p in first if p.payload[1] & 0x80]
    assert durs == [160, 320, 480, 640, 800, 800, 800] and len(ends) == 3
    second = [p for p in te if p.payload[0] == 11]
    assert second[0].marker and len({p.timestamp for p in second}) == 1
    assert second[0].timestamp == 5000 + (len(first) + 3) * N  # the media clock ran on through the gap


def test_info_bodies():
    assert parse_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n") == ("5", 160)
    assert parse_info("Application/DTMF-Relay; charset=x", b"signal= *\r\n") == ("*", 250)
    assert parse_info("application/dtmf", b"11") == ("#", 250)
    assert parse_info("application/dtmf", b"A\r\n") == ("A", 250)
    for ctype, body in [("application/dtmf-relay", b"Duration=160"), ("application/dtmf-relay", b"Signal=X"),
                        ("application/dtmf-relay", b"Signal=1\nDuration=0"), ("application/dtmf", b"17"),
                        ("text/plain", b"1")]:
        with pytest.raises(InfoError):
            parse_info(ctype, body)


def _peaks(pcm: np.ndarray, k: int = 2) -> list[float]:
    spec = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    order = np.argsort(spec)[::-1]
    found: list[float] = []
    for i in order:
        if all(abs(freqs[i] - f) > 30 for f in found):
            found.append(float(freqs[i]))
        if len(found) == k:
            break
    return sorted(found)


def test_tones_and_digits_spectra():
    ring = tone_pcm("440+480:2000/4000")
    assert len(ring) == 6 * 8000 and not ring[16000:].any()
    assert _peaks(ring[:16000]) == pytest.approx([440, 480], abs=2)
    assert np.array_equal(tone_pcm("ring"), ring)
    assert len(tone_pcm("busy", duration_ms=3000)) == 24000
    assert _peaks(tone_pcm("dial/de")[:8000], 1) == pytest.approx([425], abs=2)
    pcm = dtmf_pcm("5#", 100, 50)
    assert len(pcm) == (100 + 50 + 100) * 8
    assert _peaks(pcm[:800]) == pytest.approx(list(DTMF_FREQS["5"]), abs=10)
    assert _peaks(pcm[1200:]) == pytest.approx(list(DTMF_FREQS["#"]), abs=10)
    for bad in ("440+:100/100", "5000", "440:100", "ring/xx", "440@-80", ""):
        with pytest.raises(ToneError):
            tone_pcm(bad)
    with pytest.raises(ToneError):
        dtmf_pcm("12x")
