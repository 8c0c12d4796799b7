"""First RTP packet of a ``speak`` playback, cold (new text: espeak-ng + decode) and cached.

Starts a server, one SIPp call whose media goes to a capture socket, then N cold and N cached
speak commands; each latency is from the POST to the kernel timestamp of the first packet
carrying non-silence after it.  ``python3 bench/speak_first_packet.py [N]`` (bounded: ~N s).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mediasrv.rtp.probe import open_capture  # noqa: E402
from tests.support.server import start_server  # noqa: E402
from tests.support.sipp import answered_calls, sipp_play_args, start_sipp  # noqa: E402

SENTENCE = "Thank you for calling. Your call is number {i} in the queue."


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        r = await start_server(Path(tmp))
        capture = await open_capture()
        sipp = await start_sipp(sipp_play_args(r, capture.port, duration_ms=int(n * 2 * 600 + 4000)))
        [call] = await answered_calls(r, 1)
        url = f"{r.http}/v1/calls/{call.call_id}/playbacks"
        out: dict[str, list[float]] = {"cold": [], "cached": []}
        async with aiohttp.ClientSession() as s:
            for kind in ("cold", "cached"):
                for i in range(n):
                    await s.delete(f"{r.http}/v1/calls/{call.call_id}/playbacks?stop=all")
                    await asyncio.sleep(0.15)
                    mark = len(capture.packets)
                    t0 = time.time()
                    async with s.post(url, json={"speak": {"text": SENTENCE.format(i=i)}}) as resp:
                        assert resp.status == 201, await resp.text()
                    while True:
                        first = next((p for p in capture.packets[mark:] if set(p.payload) != {0xFF}), None)
                        if first is not None:
                            break
                        await asyncio.sleep(0.002)
                    out[kind].append((first.arrival - t0) * 1000)
                    await asyncio.sleep(0.3)
        capture.close()
        await r.server.stop()
        sipp.cancel()
    for kind, v in out.items():
        a = np.array(v)
        print(f"{kind:6s} n={len(a)} p50={np.percentile(a, 50):.1f} ms p99={np.percentile(a, 99):.1f} ms "
              f"max={a.max():.1f} ms")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
