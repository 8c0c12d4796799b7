"""Bridged call audio end to end: SIPp callers talk (tones replayed from a pcap with play_pcap_audio),
the server mixes N−1, and an independent receiver at each caller's media address hears the others.

SIPp sends pcap audio from a raw socket whose source port is the port named by ``[media_port+N]``
on the SDP's m=audio line, while it binds its own media sockets on ``[media_port]`` and
``[media_port+2]``.  Advertising ``[media_port+4]`` therefore lets an :class:`RtpCapture` own the
address SIPp both announces and sends from: the server's leg accepts SIPp's packets (they come from
the negotiated remote) and sends what the caller hears to the capture.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.support.audio import assert_hears
from tests.support.httpapi import api
from tests.support.server import start_server, wait_until
from tests.support.talker import Talker, wall_time

pytestmark = pytest.mark.integration

RATE = 8000


async def test_bridge_pcmu_to_pcma_each_leg_hears_the_other(tmp_path):
    r = await start_server(tmp_path)
    a = Talker(tmp_path, "a", 440, "PCMU", 5.0)
    b = Talker(tmp_path, "b", 880, "PCMA", 5.0)
    try:
        await asyncio.gather(a.dial(r), b.dial(r))
        await asyncio.sleep(0.3)
        t_before = await wall_time()
        status, room = await api(r, "POST", f"/v1/calls/{a.call.call_id}/bridge", {"call_id": b.call.call_id})
        assert status == 200, room
        t_join = await wall_time()
        await asyncio.sleep(2.5)
        t_end = await wall_time()
        assert r.server.media.peers_of(a.call.call_id) == [b.call.call_id]
        status, call_a = await api(r, "GET", f"/v1/calls/{a.call.call_id}")
        assert status == 200 and call_a["packets_received"] > 100 and call_a["dropped_foreign"] == 0, call_a
        jb = call_a["jitter_buffer"]  # A's inbound audio, as the mixer took it for B
        assert jb["played"] > 100 and jb["late"] == 0 and jb["resets"] == 0 and jb["duplicates"] == 0, jb
        await asyncio.gather(a.finish(), b.finish())
    finally:
        a.close()
        b.close()
        await r.server.stop()
    before = a.heard(t_before - 0.3, t_before)
    assert not before.any(), "no call audio before the bridge"
    assert_hears(a.heard(t_join + 0.3, t_end), present=[880], absent=[440], who="A (PCMU)")
    assert_hears(b.heard(t_join + 0.3, t_end), present=[440], absent=[880], who="B (PCMA)")


async def test_three_party_room_then_one_hangs_up(tmp_path):
    r = await start_server(tmp_path)
    a = Talker(tmp_path, "a", 440, "PCMU", 6.0)
    b = Talker(tmp_path, "b", 880, "PCMU", 6.0)
    c = Talker(tmp_path, "c", 1320, "PCMA", 3.0)
    try:
        await asyncio.gather(a.dial(r), b.dial(r), c.dial(r))
        status, room = await api(r, "POST", "/v1/rooms")
        assert status == 201, room
        for t in (a, b, c):
            status, _ = await api(r, "POST", f"/v1/rooms/{room['room_id']}/join", {"call_id": t.call.call_id})
            assert status == 200
        t_join = await wall_time()
        await asyncio.sleep(1.5)
        t_mid = await wall_time()
        await c.finish()  # C hangs up (BYE after its 3 s)
        await wait_until(lambda: c.call.call_id not in r.server.media.peers_of(a.call.call_id), 5, "C gone")
        t_gone = await wall_time()
        await asyncio.sleep(1.5)
        t_end = await wall_time()
        await asyncio.gather(a.finish(), b.finish())
    finally:
        for t in (a, b, c):
            t.close()
        await r.server.stop()
    assert_hears(a.heard(t_join + 0.3, t_mid), [880, 1320], [440], "A in the room")
    assert_hears(b.heard(t_join + 0.3, t_mid), [440, 1320], [880], "B in the room")
    assert_hears(c.heard(t_join + 0.3, t_mid), [440, 880], [1320], "C (PCMA) in the room")
    assert_hears(a.heard(t_gone + 0.1, t_end), [880], [440, 1320], "A after C left")
    assert_hears(b.heard(t_gone + 0.1, t_end), [440], [880, 1320], "B after C left")


async def test_inbound_caller_bridged_to_an_outbound_pcma_callee(tmp_path):
    r = await start_server(tmp_path)
    caller = Talker(tmp_path, "caller", 440, "PCMU", 5.0)
    callee = Talker(tmp_path, "callee", 880, "PCMA", 5.0)
    try:
        await caller.dial(r)
        await callee.answer(r)
        status, room = await api(r, "POST", f"/v1/calls/{caller.call.call_id}/bridge",
                                 {"call_id": callee.call.call_id})
        assert status == 200 and room["kind"] == "bridge", room
        t_join = await wall_time()
        await asyncio.sleep(2.0)
        t_end = await wall_time()
        status, _ = await api(r, "DELETE", f"/v1/calls/{callee.call.call_id}")  # we hang up the callee
        assert status in (200, 202, 204)
        await callee.finish()
        await caller.finish()
    finally:
        caller.close()
        callee.close()
        await r.server.stop()
    assert_hears(caller.heard(t_join + 0.3, t_end), [880], [440], "inbound caller (PCMU)")
    assert_hears(callee.heard(t_join + 0.3, t_end), [440], [880], "outbound callee (PCMA)")


async def test_bridge_g722_to_pcmu_each_leg_hears_the_other(tmp_path):
    """A wideband leg and a narrowband one in one bridge (mixed at 8 kHz): each hears the other's tone."""
    r = await start_server(tmp_path, codecs=["G722", "PCMU", "PCMA"])
    a = Talker(tmp_path, "a", 1000, "G722", 5.0)
    b = Talker(tmp_path, "b", 600, "PCMU", 5.0)
    try:
        await asyncio.gather(a.dial(r), b.dial(r))
        await asyncio.sleep(0.3)
        t_before = await wall_time()
        status, room = await api(r, "POST", f"/v1/calls/{a.call.call_id}/bridge", {"call_id": b.call.call_id})
        assert status == 200, room
        t_join = await wall_time()
        await asyncio.sleep(2.5)
        t_end = await wall_time()
        status, call_a = await api(r, "GET", f"/v1/calls/{a.call.call_id}")
        assert status == 200 and call_a["codec"] == "G722" and call_a["packets_received"] > 100, call_a
        jb = call_a["jitter_buffer"]  # A's G.722, decoded by the mixer for B
        assert jb["played"] > 100 and jb["ignored"] == 0 and jb["resets"] == 0, jb
        await asyncio.gather(a.finish(), b.finish())
    finally:
        a.close()
        b.close()
        await r.server.stop()
    before = a.heard(t_before - 0.3, t_before)
    assert np.abs(before[80:].astype(np.int32)).max() < 64, "only G.722 silence before the bridge"
    assert_hears(a.heard(t_join + 0.3, t_end), present=[600], absent=[1000], who="A (G722)")
    assert_hears(b.heard(t_join + 0.3, t_end), present=[1000], absent=[600], who="B (PCMU)")
