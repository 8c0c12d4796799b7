"""What a stopped playback's download costs after the stop: bytes, time to disconnect, server memory.

A local origin (aiohttp, in this process) serves 1-hour 8 kHz 16-bit WAVs (57.6 MB each, a
distinct URL per play, so each is its own download) at a fixed rate per connection, and records
per response the bytes it sent and when the client disconnected.  ``mediasrv serve`` runs in its
own process; our UAC (``SipUserAgent`` + ``probe.CaptureMedia``) calls it.

Part 1: one call plays one URL, the play is stopped after ``--stop-after`` s, repeated
``--singles`` times: bytes the origin sent, time from the stop command to the origin seeing the
connection close.
Part 2: ``--calls`` calls (default 20) each play their own 1-hour URL; after ``--hold`` s (all
downloading and decoding) every call's playbacks are stopped at once.  Server VmRSS before,
just before the stop, and 1 s / 5 s after it (and the decoder process's), the slowest
disconnect, and the loader's ``cancelled`` counter from ``/metrics``.

    python bench/fetch_cancel.py                     # 20 calls, 2 MB/s per download, 8 s
    python bench/fetch_cancel.py --calls 5 --rate-mb 1 --hold 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
from aiohttp import web

from mediasrv.calls.controller import SipSettings, SipUserAgent
from mediasrv.calls.registry import CallRegistry
from mediasrv.demo import free_port_pair
from mediasrv.rtp.probe import CaptureMedia

HOUR_BYTES = 3600 * 8000 * 2
PIECE = 64 * 1024


def wav_header(data_bytes: int, rate: int = 8000) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", data_bytes + 36) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes))


BLOCK = (np.sin(2 * np.pi * 440 * np.arange(PIECE // 2) / 8000) * 8000).astype("<i2").tobytes()


@dataclass
class Transfer:
    sent: int = 0
    closed_at: float | None = None
    finished: bool = False


class Origin:
    """1-hour WAVs at *rate* bytes/s per response; ``transfers[path]`` records each response."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.transfers: dict[str, Transfer] = {}
        self.runner: web.AppRunner | None = None
        self.base = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        t = self.transfers[request.path] = Transfer()
        resp = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        resp.content_length = 44 + HOUR_BYTES
        await resp.prepare(request)
        every = PIECE / self.rate
        try:
            await resp.write(wav_header(HOUR_BYTES))
            while t.sent < HOUR_BYTES:
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError
                piece = BLOCK[: min(PIECE, HOUR_BYTES - t.sent)]
                await resp.write(piece)
                t.sent += len(piece)
                slept = 0.0
                while slept < every:  # poll for the disconnect every 10 ms between pieces
                    await asyncio.sleep(min(0.01, every - slept))
                    slept += 0.01
                    if request.transport is None or request.transport.is_closing():
                        raise ConnectionResetError
            t.finished = True
        except (ConnectionError, RuntimeError):
            t.closed_at = loop.time()
        return resp

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def memory(pid: int) -> str:
    workers = " + ".join(f"{rss_mb(c):.0f}" for c in children(pid)) or "none"
    return f"server {rss_mb(pid):.0f} MB (decoder process {workers} MB)"


class Server:
    def __init__(self, data: Path, calls: int) -> None:
        sip_port, http_port, lo = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM), free_port_pair()
        env = {**os.environ, "MEDIASRV_FETCH_ALLOW_CIDRS": "127.0.0.0/8", "MEDIASRV_FETCH_TIMEOUT_S": "7200"}
        cmd = [sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{sip_port}",
               "--http", f"127.0.0.1:{http_port}", "--rtp-ports", f"{lo}-{lo + 4 * calls + 40}",
               "--data-dir", str(data), "--max-calls", str(calls + 10), "--rtp-timeout", "0", "--log-level", "WARNING"]
        self.log = open(data / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.sip_port, self.http = sip_port, f"http://127.0.0.1:{http_port}"

    async def ready(self, s: aiohttp.ClientSession) -> None:
        for _ in range(200):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                async with s.get(f"{self.http}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("server did not answer /healthz")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


async def cancelled_count(s: aiohttp.ClientSession, http: str) -> int:
    async with s.get(f"{http}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith('mediasrv_source_cancelled_total '):
                return int(float(line.split()[-1]))
    return -1


async def run(args: argparse.Namespace) -> None:
    origin = Origin(args.rate_mb * 1e6)
    await origin.start()
    data = Path(tempfile.mkdtemp(prefix="mediasrv-cancel-"))
    server = Server(data, args.calls)
    media = CaptureMedia()
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=0, user_agent="mediasrv-bench"), CallRegistry(), media)
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as s:
            await server.ready(s)
            await uac.start()
            calls = [await uac.call(f"sip:bench{i}@127.0.0.1:{server.sip_port}",
                                    remote=("127.0.0.1", server.sip_port), timeout=10) for i in range(args.calls)]
            async with s.get(f"{server.http}/v1/calls") as resp:
                by_sip = {c["sip_call_id"]: c["call_id"] for c in (await resp.json())["calls"]}
            cids = [by_sip[c.sip_call_id] for c in calls]
            await asyncio.sleep(1.0)  # the decoder process is up

            async def play(cid: str, name: str) -> str:
                async with s.post(f"{server.http}/v1/calls/{cid}/playbacks",
                                  json={"url": f"{origin.base}/{name}"}) as resp:
                    assert resp.status == 201, await resp.text()
                    return (await resp.json())["id"]

            async def stop_all(cid: str) -> None:
                async with s.delete(f"{server.http}/v1/calls/{cid}/playbacks", params={"stop": "all"}) as resp:
                    assert resp.status == 200, await resp.text()

            async def closed(paths: list[str], limit: float = 30.0) -> None:
                end = loop.time() + limit
                while any(origin.transfers[p].closed_at is None for p in paths):
                    if loop.time() > end:
                        raise RuntimeError("the origin did not see every connection close")
                    await asyncio.sleep(0.005)

            # -- part 1 ------------------------------------------------------------------------
            sent, waits = [], []
            for i in range(args.singles):
                name = f"single{i}.wav"
                await play(cids[0], name)
                await asyncio.sleep(args.stop_after)
                at = loop.time()
                await stop_all(cids[0])
                await closed([f"/{name}"])
                t = origin.transfers[f"/{name}"]
                sent.append(t.sent)
                waits.append(1000 * (t.closed_at - at))  # type: ignore[operator]
            print(f"single stop after {args.stop_after:g} s at {args.rate_mb:g} MB/s: origin sent "
                  f"{statistics.median(sent) / 1e6:.2f} MB of {(44 + HOUR_BYTES) / 1e6:.1f} MB (median of "
                  f"{args.singles}; max {max(sent) / 1e6:.2f}); stop command -> origin saw the close: median "
                  f"{statistics.median(waits):.0f} ms, max {max(waits):.0f} ms")

            # -- part 2 ------------------------------------------------------------------------
            await asyncio.sleep(2.0)
            before = memory(server.proc.pid)
            names = [f"hour{i}.wav" for i in range(args.calls)]
            await asyncio.gather(*(play(cid, name) for cid, name in zip(cids, names, strict=True)))
            await asyncio.sleep(args.hold)
            during = memory(server.proc.pid)
            got = sum(origin.transfers[f"/{n}"].sent for n in names)
            at = loop.time()
            await asyncio.gather(*(stop_all(cid) for cid in cids))
            await closed([f"/{n}" for n in names])
            slowest = max(origin.transfers[f"/{n}"].closed_at - at for n in names)  # type: ignore[operator]
            after_stop = sum(origin.transfers[f"/{n}"].sent for n in names) - got
            await asyncio.sleep(1.0)
            after1 = memory(server.proc.pid)
            await asyncio.sleep(4.0)
            after5 = memory(server.proc.pid)
            cancelled = await cancelled_count(s, server.http)
            print(f"{args.calls} concurrent 1-hour downloads at {args.rate_mb:g} MB/s each, stopped after "
                  f"{args.hold:g} s ({got / 1e6:.0f} MB downloaded between them, "
                  f"{sum(origin.transfers[f'/{n}'].finished for n in names)} finished):")
            print(f"  every connection closed {1000 * slowest:.0f} ms after the stops were sent; "
                  f"{after_stop / 1e3:.0f} KB sent after that in all; loader cancelled = {cancelled}")
            print(f"  RSS before {before}; downloading {during}; 1 s after the stop {after1}; 5 s after {after5}")
            for c in calls:
                await uac.hangup(c.call_id)
    finally:
        await uac.stop()
        media.close_all()
        server.stop()
        if origin.runner is not None:
            await origin.runner.cleanup()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--rate-mb", type=float, default=2.0, help="MB/s per download")
    ap.add_argument("--hold", type=float, default=8.0, help="seconds the downloads run before the stop")
    ap.add_argument("--singles", type=int, default=5)
    ap.add_argument("--stop-after", type=float, default=1.0)
    t0 = time.monotonic()
    asyncio.run(run(ap.parse_args()))
    print(f"({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
