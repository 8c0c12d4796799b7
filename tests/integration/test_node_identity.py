"""Node identity on a real server (issue 11): call and playback ids name the node; a duplicate live id is refused."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from mediasrv.cluster.identity import NodeIdError
from tests.support.audio import chirp_signal, wav_bytes
from tests.support.server import hang_up_all, start_server
from tests.support.sipp import run_sipp, sipp_caller


async def test_ids_name_the_node_and_duplicates_are_refused(tmp_path):
    cluster = tmp_path / "cluster"
    r = await start_server(tmp_path / "a", node_id="edge-a", cluster_dir=str(cluster))
    try:
        with pytest.raises(NodeIdError, match="edge-a"):
            await start_server(tmp_path / "b", node_id="edge-a", cluster_dir=str(cluster))
        (r.data_dir / "media" / "p.wav").write_bytes(wav_bytes(chirp_signal(2.0), 8000))
        sipp = asyncio.create_task(run_sipp(*sipp_caller(r), timeout=30))
        for _ in range(100):
            if any(c.state.value == "answered" for c in r.server.registry.active()):
                break
            await asyncio.sleep(0.05)
        [call] = list(r.server.registry.active())
        assert call.call_id.startswith("v3:edge-a:")
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"media": "p.wav"}) as resp:
                assert resp.status == 201
                playback = await resp.json()
            assert playback["id"].startswith("p3:edge-a:")
            async with s.get(f"{r.http}/v1/playbacks/{playback['id']}") as resp:
                assert resp.status == 200
            async with s.get(f"{r.http}/healthz") as resp:
                assert (await resp.json())["node_id"] == "edge-a"
        await hang_up_all(r)
        assert (await sipp)[0] == 0
    finally:
        await r.server.stop()
    r2 = await start_server(tmp_path / "c", node_id="edge-a", cluster_dir=str(cluster))  # the first one is gone
    await r2.server.stop()
