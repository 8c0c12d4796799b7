"""The command service over a real MediaPlane and CallRegistry: each refusal is a named domain error.

None of them is a KeyError or ValueError, so an API handler that maps them can no longer take a
bug inside the core (a stray KeyError) for "the call has no media".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mediasrv.calls.commands import (
    CallEnded,
    CallNotAnswered,
    CommandError,
    CommandService,
    InvalidCommand,
    LegUnavailable,
    NoSuchCall,
    NoSuchLeg,
    NoSuchPlayback,
)
from mediasrv.calls.registry import Call, CallRegistry, Direction
from mediasrv.demo import free_port_pair
from mediasrv.media import MediaPlane, MediaSettings, PlayRequest
from mediasrv.media.collect import CollectRequest
from mediasrv.media.player import SourceSpec


class Env:
    def __init__(self, tmp_path: Path) -> None:
        lo = free_port_pair()
        self.plane = MediaPlane(MediaSettings(rtp_port_lo=lo, rtp_port_hi=lo + 20, data_dir=str(tmp_path)),
                                emit=lambda t, c, d: None)
        self.calls = CallRegistry()
        self.commands = CommandService(self.calls, self.plane)

    def call(self, leg: bool = True, answered: bool = True) -> Call:
        call = Call(Direction.INBOUND, "sip:a@x", "sip:b@x", f"{len(list(self.calls.all()))}@x")
        self.calls.add(call)
        if answered:
            self.calls.answered(call)
        if leg:
            call.local_rtp = self.plane.allocate(call)
        return call

    def hangup(self, call: Call) -> None:
        self.calls.ended(call, "normal_clearing", "caller")
        self.plane.release(call)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    await e.plane.start()
    try:
        yield e
    finally:
        await e.plane.stop()


def tone(**kw: object) -> PlayRequest:
    return PlayRequest(sources=[SourceSpec(tone="440:200")], **kw)  # type: ignore[arg-type]


def test_domain_errors_are_not_lookup_or_value_errors() -> None:
    for cls in (NoSuchCall, CallEnded, CallNotAnswered, NoSuchLeg, NoSuchPlayback, InvalidCommand):
        assert issubclass(cls, CommandError)
        assert not issubclass(cls, LookupError | ValueError), cls


async def test_call_lookup(env: Env) -> None:
    with pytest.raises(NoSuchCall) as unknown:
        env.commands.live_call("v3:nope")
    assert unknown.value.call_id == "v3:nope"
    ringing = env.call(leg=False, answered=False)
    assert env.commands.live_call(ringing.call_id) is ringing
    with pytest.raises(CallNotAnswered):
        env.commands.live_call(ringing.call_id, answered=True)
    ended = env.call()
    env.hangup(ended)
    with pytest.raises(CallEnded) as gone:
        env.commands.live_call(ended.call_id)
    assert gone.value.cause == "normal_clearing" and "normal_clearing" in gone.value.message
    assert env.commands.call(ended.call_id) is ended  # the plain lookup still finds it


async def test_play_without_a_media_leg_is_no_such_leg(env: Env) -> None:
    call = env.call(leg=False)
    with pytest.raises(NoSuchLeg) as err:
        env.commands.play(call.call_id, tone())
    assert err.value.call_id == call.call_id
    with pytest.raises(NoSuchLeg):
        env.commands.send_dtmf(call.call_id, "1", 100)
    with pytest.raises(NoSuchLeg):
        env.commands.collect(call.call_id, CollectRequest())


async def test_play_target_legs_name_the_leg_at_fault(env: Env) -> None:
    call, ended = env.call(), env.call()
    env.hangup(ended)
    with pytest.raises(NoSuchCall) as unknown:
        env.commands.play(call.call_id, tone(target=[call.call_id, "v3:other"]))
    assert unknown.value.call_id == "v3:other"
    with pytest.raises(CallEnded) as gone:
        env.commands.play(call.call_id, tone(target=[ended.call_id]))
    assert gone.value.call_id == ended.call_id
    with pytest.raises(LegUnavailable):  # what dialects that do not tell them apart catch
        env.commands.play(call.call_id, tone(target=[ended.call_id]))


async def test_refused_commands_are_invalid_with_a_reason(env: Env) -> None:
    call = env.call()
    cases = [
        (tone(loop=0), "out_of_range", 422),
        (tone(target="opposite"), "no_opposite_leg", 409),
        (tone(overlay=True), "nothing_playing", 422),
        (PlayRequest(sources=[]), "no_source", 422),
    ]
    for request, reason, status in cases:
        with pytest.raises(InvalidCommand) as err:
            env.commands.play(call.call_id, request)
        assert (err.value.reason, err.value.status, err.value.call_id) == (reason, status, call.call_id)
    with pytest.raises(InvalidCommand) as bad_stop:
        env.commands.stop_playbacks(call.call_id, "some")
    assert bad_stop.value.reason == "invalid_stop" and bad_stop.value.status == 400
    with pytest.raises(InvalidCommand) as bad_collect:
        env.commands.collect(call.call_id, CollectRequest(max_digits=0))
    assert bad_collect.value.reason == "out_of_range"


async def test_playback_commands(env: Env) -> None:
    call = env.call()
    [pb] = env.commands.play(call.call_id, tone())
    assert env.commands.playback(pb.id) is pb
    with pytest.raises(InvalidCommand) as bad_op:
        env.commands.control(pb.id, "rewind")
    assert (bad_op.value.reason, bad_op.value.status, bad_op.value.call_id) == ("invalid_op", 400, call.call_id)
    assert env.commands.stop_playback(pb.id) is True
    assert env.commands.stop_playback(pb.id) is False  # already ended: a no-op
    with pytest.raises(InvalidCommand) as ended:
        env.commands.pause(pb.id)
    assert (ended.value.reason, ended.value.status) == ("playback_ended", 409)
    for command in (env.commands.playback, env.commands.stop_playback, env.commands.resume):
        with pytest.raises(NoSuchPlayback):
            command("p3:nope")
