"""One node vs two behind Kamailio, same run: playing calls' pacing, SIP calls/s, forwarded-command latency.

Everything through ``mediasrv cluster``'s own code (mediasrv/cluster/launcher.py: Kamailio with the
shipped config in front of N ``mediasrv serve`` nodes), on loopback, bounded, stopped by PID:

1. **Playing calls** (per N in ``--n``, 1 node then 2 nodes): our UAC (SipUserAgent) dials Kamailio,
   each call's SDP names a port of ``pacing.py``'s C receiver (bench/c/rtp_receiver.c); once answered
   every call plays a looped 10 s prompt (``POST /v1/calls/{id}/playbacks`` sent to the owner named
   by the call id); the receiver measures a ``--seconds`` window: packets, deliv%, loss, |inter-arrival
   − 20 ms| p50/p99/max (pacing.py's table), nodes' CPU summed. The ratio that matters: at the same
   N, how far p99 and deliv% hold with 2 nodes when 1 node falls behind.
2. **SIP through Kamailio** (per rate in ``--rates``): SIPp ``uac_proxy_play.xml`` (ACK/BYE via the
   route set), calls of 1 s at that rate for ``--sip-seconds``, optional ``--lost 5`` (SIPp drops that
   % of its messages: retransmissions must carry the calls): successful/failed calls, and Kamailio's own
   CPU (all its processes, /proc) per call.
3. **HTTP forwarded to the owner**: ``--http-requests`` GET /v1/calls/{id} for a call of node 2 sent to
   node 2 directly and to node 1 (forwarded), alternating: added latency p50/p99.

    python bench/cluster.py                                   # full: N 200,400; rates 100,200,300
    python bench/cluster.py --n 50 --seconds 4 --rates 100 --sip-seconds 3 --http-requests 100  # smoke
    python bench/cluster.py --n 300,600,900,1200,1500,1800 --seconds 6 --call-rate 200 --rates '' \
        --http-requests 0 --p99-bound 5,10 --stop-at-knee  # capacity sweep: largest N per size, the ratio
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.support (free port runs)
import pacing  # noqa: E402 - the receiver, its table and helpers

from mediasrv.calls.controller import SipSettings, SipUserAgent  # noqa: E402
from mediasrv.calls.registry import Call, CallRegistry, owner_of  # noqa: E402
from mediasrv.cluster.launcher import Cluster, ClusterPlan  # noqa: E402
from tests.support import ports  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pacing.RECEIVER_BASE = 30000  # room for 10,000 receiver streams below the nodes' RTP (50000-59998)


def free_run(n: int) -> int:
    return ports.free_run(n, 60100, 64000)  # above the receiver's and the nodes' RTP ports


def start_cluster(nodes: int, data: Path, pin: bool, extra: list[str]) -> Cluster:
    plan = ClusterPlan(nodes=nodes, sip=f"127.0.0.1:{free_run(1)}", http_base=free_run(nodes),
                       node_sip_base=free_run(nodes), rtp_ports=f"{pacing.RTP_LO}-{pacing.RTP_HI}", data_dir=data,
                       pin=pin, ping_interval_s=1)
    (data / "media").mkdir(parents=True, exist_ok=True)
    t = np.arange(10 * 8000) / 8000
    soundfile.write(data / "media" / "prompt.wav", (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16),
                    8000, subtype="PCM_16")
    c = Cluster(plan, ["--log-level", "WARNING", "--rtp-timeout", "0", *extra], log_dir=data / "logs")
    c.start()
    for pid in [p.pid for p in c.nodes.values()] + ([c.kamailio.pid] if c.kamailio else []):
        pacing.CHILDREN.add(pid)
    return c


def kamailio_cpu(c: Cluster) -> float:
    """utime+stime of Kamailio's main process and every process it forked."""
    assert c.kamailio is not None
    main = c.kamailio.pid
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(d) == main or int(fields[1]) == main:
            total += (int(fields[11]) + int(fields[12])) / pacing.CLK_TCK
    return total


def nodes_cpu(c: Cluster) -> float:
    return sum(pacing.cpu_seconds(p.pid) for p in c.nodes.values() if p.poll() is None)


async def play_row(c: Cluster, n: int, seconds: float, rx: pacing.Receiver, call_rate: float,
                   http_requests: int) -> tuple[int, dict, float, list[str]]:
    notes: list[str] = []
    kam = c.plan.sip_addr
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=pacing.free_port(socket.SOCK_DGRAM, n),
                                   user_agent="mediasrv-bench"), CallRegistry(), pacing.ReceiverPorts())
    await uac.start()
    urls = {s.node_id: s.http_url(c.plan.host) for s in c.plan.specs}
    calls: list[Call] = []
    sem = asyncio.Semaphore(100)
    t0 = time.monotonic()

    async def one(i: int) -> Call:
        await asyncio.sleep(max(0.0, t0 + i / call_rate - time.monotonic()))
        async with sem:
            return await uac.call(f"sip:bench@{kam[0]}:{kam[1]}", remote=kam, timeout=30.0)

    try:
        results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
        calls = [r for r in results if isinstance(r, Call)]
        notes.append(f"{len(calls)}/{n} answered through Kamailio in {time.monotonic() - t0:.1f} s")
        by_sip = {x.sip_call_id for x in calls}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            async with s.get(f"{urls[c.plan.specs[0].node_id]}/v1/calls", params={"scope": "cluster",
                                                                                  "state": "answered"}) as resp:
                listed = [x for x in (await resp.json())["calls"] if x["sip_call_id"] in by_sip]
            per_node = {nid: sum(1 for x in listed if owner_of(x["call_id"]) == nid) for nid in urls}
            notes.append(f"calls per node: {per_node}")
            psem = asyncio.Semaphore(50)

            async def play(call_id: str) -> bool:
                async with psem, s.post(f"{urls[owner_of(call_id)]}/v1/calls/{call_id}/playbacks",
                                        json={"media": "prompt.wav", "loop": "infinity"}) as resp:
                    return resp.status == 201

            playing = sum(await asyncio.gather(*(play(x["call_id"]) for x in listed)))
            notes.append(f"{playing} playbacks started")
            await asyncio.sleep(pacing.WARMUP_S + pacing.SKIP_S)
            cpu0 = nodes_cpu(c)
            rx.start_window()
            await asyncio.sleep(seconds)
            cpu = nodes_cpu(c) - cpu0
            stats = await asyncio.get_running_loop().run_in_executor(None, rx.result)
            if http_requests and len(c.plan.specs) > 1:
                notes.append(await forwarded_latency(s, c, listed, http_requests))
    finally:
        hsem = asyncio.Semaphore(100)

        async def hangup(x: Call) -> None:
            async with hsem:
                try:
                    await uac.hangup(x.call_id)
                except Exception:  # noqa: BLE001 - already ended
                    pass

        await asyncio.gather(*(hangup(x) for x in calls))
        await asyncio.sleep(1.0 + len(calls) / 1000)
        await uac.stop()
        left = await end_leftovers(c)
        if left:  # a BYE lost under overload leaves a call playing (no RTP timeout): the next row would count it
            notes.append(f"{left} calls still up after the BYEs: ended through the API")
    return playing, stats, cpu, notes


async def end_call(s: aiohttp.ClientSession, base: str, call_id: str, sem: asyncio.Semaphore) -> None:
    async with sem, s.delete(f"{base}/v1/calls/{call_id}") as resp:
        await resp.read()


async def end_leftovers(c: Cluster) -> int:
    """DELETE every call still up on any node; how many there were."""
    n = 0
    dsem = asyncio.Semaphore(50)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        for spec in c.plan.specs:
            base = spec.http_url(c.plan.host)
            async with s.get(f"{base}/v1/calls", params={"state": "answered", "limit": "100000"}) as resp:
                up = [x["call_id"] for x in (await resp.json())["calls"]]
            n += len(up)
            await asyncio.gather(*(end_call(s, base, x, dsem) for x in up))
    if n:
        await asyncio.sleep(1.0)
    return n


async def forwarded_latency(s: aiohttp.ClientSession, c: Cluster, listed: list[dict], k: int) -> str:
    first, second = c.plan.specs[0], c.plan.specs[1]
    target = next((x["call_id"] for x in listed if owner_of(x["call_id"]) == second.node_id), None)
    if target is None:
        return "forwarding: no call on node 2"
    direct, via = [], []
    for i in range(2 * k):
        base = (second if i % 2 == 0 else first).http_url(c.plan.host)
        t = time.perf_counter()
        async with s.get(f"{base}/v1/calls/{target}") as resp:
            await resp.read()
            assert resp.status == 200
        (direct if i % 2 == 0 else via).append((time.perf_counter() - t) * 1000)

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q))

    return (f"GET /v1/calls/{{id}} x{k} each, after the window, calls still playing: direct p50 {pct(direct, 50):.2f} "
            f"p99 {pct(direct, 99):.2f} ms; forwarded p50 {pct(via, 50):.2f} p99 {pct(via, 99):.2f} ms; "
            f"added p50 {pct(via, 50) - pct(direct, 50):.2f} ms, p99 {pct(via, 99) - pct(direct, 99):.2f} ms")


def sip_row(c: Cluster, rate: int, seconds: float, lost: int) -> str:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # media address nobody reads
    sink.bind(("127.0.0.1", 0))
    host, port = c.plan.sip_addr
    total = int(rate * seconds)
    cmd = ["sipp", f"{host}:{port}", "-sf", str(REPO / "sipp-scenarios" / "uac_proxy_play.xml"), "-i", "127.0.0.1",
           "-p", "0", "-set", "rtp_ip", "127.0.0.1", "-set", "rtp_port", str(sink.getsockname()[1]), "-d", "1000",
           "-r", str(rate), "-m", str(total), "-l", str(rate * 3), "-timeout", str(int(seconds + 30)) + "s",
           "-nostdin", "-trace_stat", "-stf", str(c.plan.data_dir / f"sipp-{rate}.csv")]
    if lost:
        cmd += ["-lost", str(lost)]
    k0, n0 = kamailio_cpu(c), nodes_cpu(c)
    t = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, env={**os.environ, "TERM": "dumb"})
    wall = time.monotonic() - t
    kcpu, ncpu = kamailio_cpu(c) - k0, nodes_cpu(c) - n0
    sink.close()
    ok = failed = -1
    for line in out.stdout.splitlines():
        if "Successful call" in line:
            ok = int(line.split("|")[2].split()[0])
        elif "Failed call" in line:
            failed = int(line.split("|")[2].split()[0])
    per_call = 1e6 * kcpu / ok if ok > 0 else float("nan")
    return (f"{len(c.plan.specs)} node(s) rate {rate}/s lost {lost}%: {ok} ok, {failed} failed of {total} in {wall:.1f} s; "
            f"Kamailio CPU {kcpu:.2f} s = {per_call:.0f} us/call; nodes CPU {ncpu:.2f} s (sipp rc {out.returncode})")


def within(r: pacing.Row, p99_bound_ms: float) -> bool:
    """The capacity criterion: every call set up and playing (no silent port), nothing lost, p99 under the bound."""
    _, p99, _, _ = r.percentiles()
    s = r.stats
    return (r.calls == r.n and s["lost"] == 0 and s["silent_ports"] == 0 and r.delivered_pct >= 99.0
            and p99 <= p99_bound_ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="200,400", help="playing calls per row, comma-separated")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--call-rate", type=float, default=100.0)
    ap.add_argument("--rates", default="100,200,300", help="SIP calls/s through Kamailio")
    ap.add_argument("--sip-seconds", type=float, default=5.0)
    ap.add_argument("--lost", type=int, default=5, help="SIPp -lost percent for the SIP rows (0: off)")
    ap.add_argument("--http-requests", type=int, default=200)
    ap.add_argument("--pin", action="store_true", help="pin node i to CPU i (the receiver shares CPU 0)")
    ap.add_argument("--deadline", type=float, default=600.0, help="kill everything after this many seconds")
    ap.add_argument("--nodes", default="1,2", help="cluster sizes to run, comma-separated")
    ap.add_argument("--p99-bound", default="5",
                    help="capacity: the largest N per cluster size with p99 under this many ms, 0 loss, >= 99 %% "
                         "delivered, every call playing; comma-separated bounds are each reported")
    ap.add_argument("--stop-at-knee", action="store_true",
                    help="per cluster size, skip the larger N once two rows in a row miss the largest bound")
    args = ap.parse_args()
    pacing.watchdog(args.deadline)
    ns = [int(x) for x in args.n.split(",") if x]
    bounds = [float(x) for x in args.p99_bound.split(",") if x]
    rates = [int(x) for x in args.rates.split(",") if x]
    with tempfile.TemporaryDirectory(prefix="mediasrv-cluster-bench-") as tmp:
        receiver_exe, _ = pacing.build(Path(tmp))
        rows: list[tuple[int, pacing.Row]] = []
        sip_lines: list[str] = []
        sizes = [int(x) for x in args.nodes.split(",") if x]
        print(pacing.HEADER, flush=True)
        for nodes in sizes:
            cap = max(max(ns, default=0), 4 * max(rates, default=0)) + 200  # above any row's concurrent calls
            c = start_cluster(nodes, Path(tmp) / f"c{nodes}", args.pin, ["--no-silence", "--max-calls", str(cap)])
            try:
                time.sleep(2.5)  # Kamailio's first probes
                misses = 0
                for n in ns:
                    rx = pacing.Receiver(receiver_exe, n, args.seconds)
                    try:
                        playing, stats, cpu, notes = asyncio.run(play_row(c, n, args.seconds, rx, args.call_rate,
                                                                          args.http_requests))
                    finally:
                        rx.stop()
                    row = pacing.Row(f"{nodes} node(s) via Kamailio", n, playing, stats, cpu,
                                     stats["window_s"] or args.seconds, 0.0, notes)
                    rows.append((nodes, row))
                    print(pacing.fmt(row, None), flush=True)  # as it comes: a sweep can be followed
                    time.sleep(1.0)
                    misses = 0 if within(row, max(bounds)) else misses + 1
                    if args.stop_at_knee and misses >= 2:
                        break
                for rate in rates:
                    sip_lines.append(sip_row(c, rate, args.sip_seconds, args.lost))
            finally:
                c.stop()
        print(pacing.HEADER)
        for n in ns:
            one = next((r for k, r in rows if k == 1 and r.n == n), None)
            for k, r in rows:
                if r.n == n:
                    print(pacing.fmt(r, one if k == 2 else None))
        print("(p99 xC / us xC on the 2-node rows: ratios to the 1-node row at the same N; CPU % = nodes summed)")
        for k, r in rows:
            for note in r.notes:
                print(f"  {k} node(s) N={r.n}: {note}")
        for bound in bounds:
            knee = {k: max((r.n for kk, r in rows if kk == k and within(r, bound)), default=0) for k in sizes}
            print(f"capacity at p99 <= {bound:g} ms, 0 lost, >= 99 % delivered, every call playing: "
                  + ", ".join(f"{k} node(s) {knee[k]} calls" for k in sizes)
                  + (f"; ratio {knee[max(sizes)] / knee[min(sizes)]:.2f}x" if len(sizes) > 1 and knee[min(sizes)] else ""))
        print("SIP through Kamailio (uac_proxy_play.xml, 1 s calls):")
        for line in sip_lines:
            print("  " + line)
        print(f"load average {os.getloadavg()[0]:.1f} at the end: compare rows of this run only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
