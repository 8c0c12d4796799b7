"""The DTMF drop counters /metrics exports are running totals kept as packets arrive (media/ivr.py),
not a walk over every leg per scrape; they equal the sum of the legs' detector counts, ended legs included."""

from __future__ import annotations

from mediasrv.media import MediaPlane, MediaSettings
from mediasrv.media.dtmf import event_payload
from mediasrv.media.ivr import DROP_REASONS, LegDtmf


def _sum(states: list[LegDtmf]) -> dict[str, int]:
    return {r: sum(getattr(s.detector.stats, r) for s in states) for r in DROP_REASONS}


async def test_drop_totals_follow_every_leg_and_survive_hangup(tmp_path):
    plane = MediaPlane(MediaSettings(rtp_port_lo=40000, rtp_port_hi=40010, data_dir=str(tmp_path)),
                       emit=lambda *a: None)
    ivr = plane.ivr
    assert ivr.drops() == dict.fromkeys(DROP_REASONS, 0)
    a, b = LegDtmf(), LegDtmf()
    ivr._legs.update({"a": a, "b": b})
    ivr.on_packet("a", a, 1, b"\x01\x0a")  # short: malformed
    ivr.on_packet("a", a, 2, event_payload(20, False, 160))  # not a DTMF key: unsupported
    ivr.on_packet("b", b, 3, event_payload(1, True, 0))  # an end of zero duration: absurd
    ivr.on_packet("b", b, 10, event_payload(1, False, 160))  # a press (no drop) ...
    ivr.on_packet("b", b, 10, event_payload(1, True, 480))  # ... its end ...
    ivr.on_packet("b", b, 10, event_payload(1, True, 480))  # ... retransmitted: duplicate
    assert ivr.drops() == _sum([a, b])
    assert (ivr.drops()["malformed"], ivr.drops()["unsupported"], ivr.drops()["absurd"],
            ivr.drops()["duplicates"]) == (1, 1, 1, 1)
    ivr.detach("a")  # an ended leg's drops stay counted
    assert ivr.drops() == _sum([a, b])
    ivr.on_packet("b", b, 11, b"\x00\x00\x00")
    assert ivr.drops()["malformed"] == 2 and ivr.drops() == _sum([a, b])
    for state in (a, b):
        if state.timer is not None:
            state.timer.cancel()
