"""Barge-in rules, offset_ms and the collect state machine, without sockets."""

import asyncio

import numpy as np
import pytest

from mediacodecs.codec import PCMU
from mediacodecs.g711 import ulaw_encode
from mediasrv.content.source import Media
from mediasrv.media.collect import Collect, CollectRequest
from mediasrv.media.player import Player, PlayError, PlayRequest, new_playback


def media(n: int, seed: int = 0) -> Media:
    pcm = np.random.default_rng(seed).integers(-20000, 20000, n).astype(np.int16)
    return Media("x", pcm, {"PCMU": ulaw_encode(pcm)})


async def ready(value: Media) -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


async def test_barge_in_current_and_all_and_keys():
    ended: list = []
    player = Player(PCMU, lambda t, pb: ended.append(pb) if t == "playback.ended" else None)
    a = new_playback("c", PlayRequest(url="a", barge_in="#0"), await ready(media(8000, 1)))
    b = new_playback("c", PlayRequest(url="b"), await ready(media(800, 2)))
    player.enqueue(a)
    player.enqueue(b)
    player.next_payload(160, 0, 0)
    assert player.barge_in("5") == [] and a.state == "playing"
    assert player.barge_in("#") == [a]
    assert (a.state, a.stopped_by, a.digit) == ("stopped", "dtmf", "#")
    assert player.current is b and player.barge_in("#") == []  # b named no keys
    c = new_playback("c", PlayRequest(url="c", barge_in="any", barge_in_stops="all"), await ready(media(8000, 3)))
    d = new_playback("c", PlayRequest(url="d"), await ready(media(800, 4)))
    player.stop("all", "api")
    player.enqueue(c)
    player.enqueue(d)
    assert player.barge_in("7") == [c, d] and d.digit == "7" and player.current is None and not player.queue


async def test_offset_first_iteration_only():
    m = media(1600, 5)
    player = Player(PCMU, lambda t, pb: None)
    pb = new_playback("c", PlayRequest(url="x", loop=2, offset_ms=100), await ready(m))
    player.enqueue(pb)
    out = b"".join(player.next_payload(160, i, i * 160) or b"" for i in range(30))
    enc = m.encoded["PCMU"]
    assert out == enc[800:] + enc
    assert pb.ms_played == 100 + 200 and pb.state == "completed"


def test_play_request_rejects_bad_barge_in_and_offset():
    for kwargs in ({"barge_in": "#x"}, {"barge_in": ""}, {"barge_in_stops": "some"},
                   {"barge_in": "1", "overlay": True}, {"offset_ms": -5}):
        with pytest.raises(PlayError):
            PlayRequest(url="u", **kwargs).validate()


def test_collect_state_machine():
    req = CollectRequest(min_digits=2, max_digits=4, terminators="#*", first_digit_timeout_ms=1000,
                         inter_digit_timeout_ms=500)
    req.validate()
    c = Collect(req, "c")
    c.prompt_ids.add("p")
    c.start(0.0)
    assert c.deadline is None  # the prompt plays: no timeout yet
    assert c.digit("1", 0.5) is False and c.deadline is None
    c.prompt_ended("p", 1.0)
    assert c.deadline == 1.5  # a digit came already: the inter-digit timeout
    assert c.expire(1.4) is False and c.digit("2", 1.4) is False and c.deadline == pytest.approx(1.9)
    assert c.digit("*", 1.5) is True and (c.digits, c.reason, c.to_dict()["valid"]) == ("12", "terminator", True)
    c2 = Collect(CollectRequest(max_digits=2, first_digit_timeout_ms=100), "c")
    c2.start(0.0)
    assert c2.expire(0.05) is False and c2.expire(0.1) is True and c2.reason == "timeout"
    c3 = Collect(CollectRequest(max_digits=2, terminators=""), "c")
    c3.start(0.0)
    assert c3.digit("#", 0.1) is False and c3.digit("1", 0.2) is True and (c3.digits, c3.reason) == ("#1", "max_digits")
    for bad in (CollectRequest(min_digits=3, max_digits=2), CollectRequest(max_digits=0),
                CollectRequest(terminators="x"), CollectRequest(inter_digit_timeout_ms=0)):
        with pytest.raises(PlayError):
            bad.validate()
