"""Ended calls leave no cyclic garbage of ours, and the GC policy keeps collections off the clock.

Why it matters: mediasrv/ops/gcpolicy.py freezes long-lived objects out of the cyclic collector, so a
reference cycle among a call's objects would outlive the call until the next idle reclaim.  Before
this test existed every ended call left 11 such objects (LegDriver <-> its clock entry, the RtpLeg,
its sockets, the Player...).
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.support.audio import chirp_signal, wav_bytes
from tests.support.paths import SCENARIOS
from tests.support.ports import free_tcp_udp_port
from tests.support.server import AudioOrigin, Hooks, Running, wait_until
from tests.support.sipp import run_sipp

pytestmark = pytest.mark.integration


async def api(r: Running, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, f"{r.http}{path}", json=body) as resp:
        return resp.status, (await resp.json() if resp.content_type == "application/json" else None)


def our_cyclic_garbage() -> Counter[str]:
    """Collect everything (frozen objects included) and name the garbage whose type is mediasrv's."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.unfreeze()  # no await between this and the collection: the server's policy cannot refreeze
        gc.collect()
        found = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
                        if type(o).__module__.startswith(("mediasrv", "mediacodecs")))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found


async def test_ended_calls_leave_no_cyclic_garbage(running: Running, webhooks: Hooks,
                                                   audio_origin: AudioOrigin) -> None:
    r = running
    our_cyclic_garbage()  # whatever earlier tests in this process left
    url = audio_origin.add("chirp.wav", wav_bytes(chirp_signal(1.0), 8000))
    media_port = free_tcp_udp_port()
    n = 6
    sipp = asyncio.create_task(run_sipp(
        f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_play.xml"), "-i", "127.0.0.1", "-p", "0",
        "-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", str(media_port), "-d", "3000",
        "-m", str(n), "-l", str(n), "-r", "20", "-timeout", "60s", "-timeout_error", timeout=90))
    calls = await wait_until(lambda: (cs := [c for c in r.server.registry.active() if c.state.value == "answered"])
                             and len(cs) >= n and cs, 15, f"{n} answered calls")
    ids = [c.call_id for c in calls]
    # an outbound call too, answered by SIPp, which hangs it up itself after 1 s
    uas_port = free_tcp_udp_port()
    uas = asyncio.create_task(run_sipp("-sf", str(SCENARIOS / "uas_bye.xml"), "-i", "127.0.0.1", "-p", str(uas_port),
                                       "-d", "1000", "-m", "1", "-timeout", "30s", timeout=60))
    await asyncio.sleep(0.3)
    status, out = await api(r, "POST", "/v1/calls", {"to": f"sip:gc@127.0.0.1:{uas_port}"})
    assert status in (200, 201), out
    # completed and looping plays, a stopped one, a failed one, and a bridge
    for cid in ids[:4]:
        status, pb = await api(r, "POST", f"/v1/calls/{cid}/playbacks", {"url": url, "loop": 2})
        assert status == 201, pb
    status, pb = await api(r, "POST", f"/v1/calls/{ids[4]}/playbacks", {"url": url, "loop": "infinity"})
    assert status == 201
    assert (await api(r, "DELETE", f"/v1/playbacks/{pb['id']}"))[0] in (200, 204)
    status, _ = await api(r, "POST", f"/v1/calls/{ids[5]}/playbacks", {"url": audio_origin.base + "/missing.wav"})
    assert status == 201
    status, room = await api(r, "POST", f"/v1/calls/{ids[0]}/bridge", {"call_id": ids[1]})
    assert status == 200, room

    code, log = await sipp
    assert code == 0, log[-2000:]
    assert (await uas)[0] == 0
    await wait_until(lambda: r.server.registry.active_count == 0, 10, "every call ended")
    await wait_until(lambda: r.server.media.clock.core.active_count == 0, 10, "every leg off the clock")
    await webhooks.wait_for(lambda e: e["call_id"] == ids[5] and e["type"] == "playback.ended")

    assert our_cyclic_garbage() == Counter()


async def test_gc_policy_freezes_and_reports(running: Running) -> None:
    """The running server froze its long-lived objects and exposes the collector's pauses."""
    policy = running.server.gc
    await wait_until(lambda: policy.stats.freezes >= 1, 5, "a freeze round")
    assert gc.get_freeze_count() > 0
    status = 0
    async with aiohttp.ClientSession() as s, s.get(f"{running.http}/metrics") as resp:
        status, text = resp.status, await resp.text()
    assert status == 200
    assert "mediasrv_gc_frozen_objects " in text
    assert 'mediasrv_gc_pause_seconds_bucket{generation="2",le="+Inf"}' in text
