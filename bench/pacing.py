"""Pacing under load: N concurrent calls all playing, measured by an independent C receiver.

For each N it runs, one after the other (never two senders at the same time):
  - a minimal C paced sender (bench/c/paced_sender.c: one thread, clock_nanosleep on
    absolute CLOCK_MONOTONIC deadlines, streams staggered over 1 ms sub-slots of the 20 ms
    packet time, one 172-byte RTP packet per stream per 20 ms) -- the yardstick;
  - mediasrv (`python -m mediasrv serve`, uvloop by default, `--asyncio` for the asyncio
    row) with N calls placed by our own UAC (mediasrv.calls.controller.SipUserAgent) whose SDP points
    at the receiver's ports, each playing a 10 s prompt with loop "infinity".  The server runs
    with --no-silence (unless --silence): a call sends only once its playback started, so
    every measured packet is playback and a call that never started shows as a silent port.
The receiver (bench/c/rtp_receiver.c) binds N even ports from 42000, reads with recvmmsg
and SO_TIMESTAMPNS kernel receive timestamps, ignores each stream's first second, and
reports packets (deliv% = share of what the streams should send in the window), loss (by
seq), seq/ts errors, SSRCs per port, streams that delivered nothing, and a 10 us histogram
of |inter-arrival - 20 ms| from which this script takes p50/p99/max (lower bin edges).  The sender's CPU is utime+stime from /proc/<pid>/stat over
the same window.  Server and C sender are pinned to CPU 1, receiver and this script
(the UAC) to CPU 0.  Only same-run ratios mean anything on a shared machine.

    python bench/pacing.py --n 100,500,1000,2000 --seconds 20 --loops uvloop,asyncio
    python bench/pacing.py --n 50 --seconds 5 --loops uvloop          # smoke run
    python bench/pacing.py --n 1500 --repeat 3 --loops uvloop,uvloop+scrape   # /metrics scraped every second vs not
    python bench/pacing.py --n 200 --seconds 10 --loops uvloop --codecs PCMU,G722   # G.722 vs PCMU, same run
    python bench/pacing.py --n 200 --seconds 10 --loops uvloop --codecs PCMU,G722 --volume-db -1   # per-packet encode

``--codecs`` runs each mediasrv row once per codec: the bench's UAC offers only that codec (the
server is configured with G722 enabled, so it decodes its prompt at 16 kHz too); the G.722 rows
play a 16 kHz prompt.  ``--volume-db`` plays at that gain, which takes every packet off the slicing
fast path into the player's per-packet mix-and-encode (G.711: a table; G.722: the leg's encoder).

``+info`` runs the server at INFO logging (the access log and the per-call lines) instead of WARNING,
``+ops`` is both (issue 13's "logging and metrics must not move pacing").
A loop name with ``+scrape`` runs that row with a Prometheus-style client GETting ``/metrics`` once a
second through the measurement window (from this process, on the bench CPU); the notes give the
scrape count, median scrape time and body size.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import soundfile

from mediasrv.calls.controller import SipSettings, SipUserAgent
from mediasrv.calls.registry import Call, CallRegistry

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
RECEIVER_BASE = 42000
SKIP_S = 1.0  # the receiver ignores each stream's first second
WARMUP_S = 2.0  # all streams running this long before the window opens
SERVER_CPU, BENCH_CPU = "1", "0"
RTP_LO, RTP_HI = 50000, 59998  # the server's RTP range

CHILDREN: set[int] = set()  # PIDs to kill if the global deadline fires
NOTES: list[str] = []  # per-row notes, printed after the table (also for rows that failed)


REALTIME = 0  # SCHED_FIFO priority for both senders (--realtime); 0 = normal scheduling

def spawn(cmd: list[str], **kw: object) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, **kw)  # type: ignore[call-overload]
    CHILDREN.add(proc.pid)
    return proc


def reap(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, wait, SIGKILL: by this process's own PID only."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    CHILDREN.discard(proc.pid)


def watchdog(deadline_s: float) -> None:
    def fire() -> None:
        print(f"pacing.py: global deadline of {deadline_s:.0f} s reached; killing children and exiting",
              file=sys.stderr, flush=True)
        for pid in list(CHILDREN):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os._exit(3)

    t = threading.Timer(deadline_s, fire)
    t.daemon = True
    t.start()


@dataclass
class Row:
    sender: str
    n: int
    calls: int  # streams that were set up and told to play (N for the C sender)
    stats: dict
    cpu_s: float
    window_s: float
    steal_s: float  # hypervisor steal time on the sender's CPU during the window
    notes: list[str] = field(default_factory=list)

    def percentiles(self) -> tuple[float, float, float, bool]:
        hist = np.array(self.stats["hist"], dtype=np.float64)
        bin_ms = self.stats["bin_us"] / 1000
        if hist.sum() == 0:
            return float("nan"), float("nan"), float("nan"), False
        cdf = np.cumsum(hist) / hist.sum()
        p50 = int(np.searchsorted(cdf, 0.50)) * bin_ms
        p99 = int(np.searchsorted(cdf, 0.99)) * bin_ms
        overflow = len(hist) > 20000  # the receiver's last bin holds everything >= 200 ms
        return p50, p99, (len(hist) - 1) * bin_ms, overflow

    @property
    def p99(self) -> float:
        return self.percentiles()[1]

    @property
    def delivered_pct(self) -> float:
        """Packets over what the ports that got anything should get in the window: < 100 = sender behind.

        Counted by ports, not by confirmed playbacks: under overload a playback may start after
        its HTTP request timed out on our side."""
        expected = (self.stats["ports"] - self.stats["silent_ports"]) * self.window_s * 50
        return 100 * self.stats["packets"] / expected if expected else float("nan")

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.window_s

    @property
    def us_per_packet(self) -> float:
        return 1e6 * self.cpu_s / self.stats["packets"] if self.stats["packets"] else float("nan")


HEADER = (f"{'sender':22} {'N':>5} {'calls':>5} {'packets':>8} {'deliv%':>6} {'lost':>5} {'seqerr':>6} {'tserr':>5} "
          f"{'ssrc/port':>9} {'silent':>6} {'p50 ms':>6} {'p99 ms':>6} {'max ms':>7} {'CPU %':>5} "
          f"{'us/pkt':>6} {'st %':>4} {'p99 xC':>6} {'us xC':>5}")


def fmt(r: Row, c: Row | None) -> str:
    s = r.stats
    p50, p99, mx, overflow = r.percentiles()
    ratio_p99 = p99 / c.p99 if c and c.p99 else float("nan")
    ratio_cpu = r.us_per_packet / c.us_per_packet if c and c.us_per_packet else float("nan")
    mx_s = f"{'>' if overflow else ''}{mx:.2f}"
    return (f"{r.sender:22} {r.n:5d} {r.calls:5d} {s['packets']:8d} {r.delivered_pct:6.1f} {s['lost']:5d} {s['seq_errors']:6d} "
            f"{s['ts_errors']:5d} {s['max_ssrcs_per_port']:9d} {s['silent_ports']:6d} {p50:6.2f} {p99:6.2f} "
            f"{mx_s:>7} {r.cpu_pct:5.1f} {r.us_per_packet:6.2f} {100 * r.steal_s / r.window_s:4.1f} "
            f"{ratio_p99:6.2f} {ratio_cpu:5.2f}")


def build(tmp: Path) -> tuple[Path, Path]:
    out = []
    for name in ("rtp_receiver", "paced_sender"):
        exe = tmp / name
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(HERE / "c" / f"{name}.c")], check=True)
        out.append(exe)
    return out[0], out[1]


def steal_seconds(cpu: str) -> float:
    """Time the hypervisor ran something else while this VM's CPU wanted to run: explains noisy rows."""
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith(f"cpu{cpu} "):
                fields = line.split()
                return int(fields[8]) / CLK_TCK if len(fields) > 8 else 0.0
    return 0.0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def free_port(kind: int, n: int) -> int:
    """A free loopback port outside the receiver's ports and their RTCP neighbours (the server
    sends RTCP to port + 1) and outside the server's RTP range."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not (RECEIVER_BASE <= port <= RECEIVER_BASE + 2 * n + 2 or RTP_LO <= port <= RTP_HI + 1):
            return port
    raise RuntimeError("no free port outside the benchmark's ranges")


class Receiver:
    def __init__(self, exe: Path, n: int, seconds: float) -> None:
        self.seconds = seconds
        self.proc = spawn(["taskset", "-c", BENCH_CPU, str(exe), str(RECEIVER_BASE), str(n), str(seconds),
                           str(SKIP_S), "20", "0", "900"], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "ready" not in line:
            reap(self.proc)
            raise RuntimeError(f"receiver failed to start: {line!r}")

    def start_window(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def result(self) -> dict:
        """Waits for the window to end (the receiver stops by itself) and parses its JSON."""
        try:
            out, _ = self.proc.communicate(timeout=self.seconds + 20)
        except subprocess.TimeoutExpired:
            reap(self.proc)
            raise RuntimeError("receiver did not finish its window") from None
        CHILDREN.discard(self.proc.pid)
        return json.loads(out.strip().splitlines()[-1])

    def stop(self) -> None:
        reap(self.proc, 5)


def run_c(receiver_exe: Path, sender_exe: Path, n: int, seconds: float) -> Row:
    rx = Receiver(receiver_exe, n, seconds)
    rt = ["chrt", "-f", str(REALTIME)] if REALTIME else []
    tx = spawn([*rt, "taskset", "-c", SERVER_CPU, str(sender_exe), str(RECEIVER_BASE), str(n)],
               stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(WARMUP_S + SKIP_S)
        c0, st0 = cpu_seconds(tx.pid), steal_seconds(SERVER_CPU)
        rx.start_window()
        time.sleep(seconds)
        cpu, steal = cpu_seconds(tx.pid) - c0, steal_seconds(SERVER_CPU) - st0
        stats = rx.result()
    finally:
        rx.stop()
        reap(tx)
    return Row("C paced sender", n, n, stats, cpu, stats["window_s"] or seconds, steal)


class ReceiverPorts:
    """MediaBackend for the bench's UAC: call i's SDP names the receiver's port BASE + 2i."""

    def __init__(self) -> None:
        self.next = 0

    def allocate(self, call: Call) -> tuple[str, int]:
        port = RECEIVER_BASE + 2 * self.next
        self.next += 1
        return ("127.0.0.1", port)

    def media_changed(self, call: Call) -> None:
        return None

    def release(self, call: Call) -> None:
        return None


async def scrape_metrics(http: str, notes: list[str], interval: float = 1.0) -> None:
    """GET /metrics every *interval* s, as a Prometheus server would, until cancelled; notes what it saw."""
    times: list[float] = []
    size = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        try:
            while True:
                t = time.monotonic()
                try:
                    async with s.get(f"{http}/metrics") as resp:
                        size = len(await resp.read())
                    times.append(time.monotonic() - t)
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - t)))
        except asyncio.CancelledError:
            pass
    notes.append(f"scraped /metrics {len(times)} times, median {1000 * float(np.median(times or [0])):.1f} ms, "
                 f"max {1000 * max(times or [0]):.1f} ms, {size / 1000:.0f} kB")


async def drive_calls(sip_port: int, http: str, n: int, seconds: float, rx: Receiver, server_pid: int,
                      setup_timeout: float, call_rate: float,
                      notes: list[str], scrape: bool = False, codec: str = "PCMU",
                      volume_db: float = 0.0) -> tuple[int, dict, float, float]:
    # The UAC's own SIP port must not be a receiver port + 1: the server sends RTCP there.
    uac = SipUserAgent(SipSettings(host="127.0.0.1", port=free_port(socket.SOCK_DGRAM, n), user_agent="mediasrv-bench",
                                   codecs=(codec,)),
                       CallRegistry(), ReceiverPorts())
    await uac.start()
    in_flight = asyncio.Semaphore(100)
    t0 = time.monotonic()

    async def one(i: int) -> Call:
        # Bounded rate as well as bounded concurrency: call i starts no earlier than i / rate.
        await asyncio.sleep(max(0.0, t0 + i / call_rate - time.monotonic()))
        async with in_flight:
            return await uac.call(f"sip:bench@127.0.0.1:{sip_port}", remote=("127.0.0.1", sip_port),
                                  timeout=30.0)

    calls: list[Call] = []
    try:
        tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
        done, pending = await asyncio.wait(tasks, timeout=setup_timeout)
        for t in pending:
            t.cancel()
        failures: Counter[str] = Counter()
        for t in tasks:
            if t in done and t.exception() is None:
                calls.append(t.result())
            elif t in done:
                failures[f"{type(t.exception()).__name__}: {t.exception()}"] += 1
            else:
                failures[f"not answered within {setup_timeout:.0f} s"] += 1
        notes.append(f"{len(calls)}/{n} calls answered in {time.monotonic() - t0:.1f} s"
                     + (f"; failures: {dict(failures)}" if failures else ""))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        by_sip = {c.sip_call_id for c in calls}
        playing = 0
        play_failures: Counter[str] = Counter()
        t1 = time.monotonic()
        # The playback phase has its own budget too: an overloaded server answers HTTP slowly, and
        # the row should then measure the playbacks that did start rather than fail as a whole.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=setup_timeout)) as s:
            async with s.get(f"{http}/v1/calls") as resp:
                server_calls = [c for c in (await resp.json())["calls"]
                                if c["sip_call_id"] in by_sip and c["state"] == "answered"]
            sem = asyncio.Semaphore(50)

            async def play(call_id: str) -> bool:
                try:
                    async with sem, s.post(f"{http}/v1/calls/{call_id}/playbacks",
                                           json={"media": "prompt.wav", "loop": "infinity",
                                                 **({"volume_db": volume_db} if volume_db else {})}) as resp:
                        if resp.status == 201:
                            return True
                        try:
                            code = (await resp.json())["error"]["code"]
                        except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
                            code = "?"
                        play_failures[f"HTTP {resp.status} {code}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    play_failures[f"{type(exc).__name__}"] += 1
                return False

            notes.append(f"{len(server_calls)} of them listed as answered by GET /v1/calls; starting playbacks")
            plays = [asyncio.ensure_future(play(c["call_id"])) for c in server_calls]
            budget = max(1.0, setup_timeout - (time.monotonic() - t1))
            done_p, pending_p = await asyncio.wait(plays, timeout=budget) if plays else (set(), set())
            for t in pending_p:
                t.cancel()
            if pending_p:
                play_failures[f"no answer within {setup_timeout:.0f} s"] += len(pending_p)
                await asyncio.gather(*pending_p, return_exceptions=True)
            playing = sum(1 for t in done_p if t.exception() is None and t.result())
            notes.append(f"{playing} playbacks started (HTTP 201) in "
                         f"{time.monotonic() - t1:.1f} s" + (f"; failures: {dict(play_failures)}" if play_failures else ""))
        await asyncio.sleep(WARMUP_S + SKIP_S)
        scraper = asyncio.ensure_future(scrape_metrics(http, notes)) if scrape else None
        c0, st0 = cpu_seconds(server_pid), steal_seconds(SERVER_CPU)
        rx.start_window()
        await asyncio.sleep(seconds)
        cpu, steal = cpu_seconds(server_pid) - c0, steal_seconds(SERVER_CPU) - st0
        if scraper is not None:
            scraper.cancel()
            await scraper
        stats = await asyncio.get_running_loop().run_in_executor(None, rx.result)
    finally:
        for c in calls:
            try:
                await uac.hangup(c.call_id)
            except Exception:  # noqa: BLE001 - a call the server already ended
                pass
        await asyncio.sleep(1.0 + len(calls) / 1000)
        await uac.stop()
    return playing, stats, cpu, steal


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not answer /healthz")


def run_mediasrv(receiver_exe: Path, n: int, seconds: float, loop: str, setup_timeout: float,
                 call_rate: float, silence: bool, codec: str | None = None, volume_db: float = 0.0) -> Row:
    loop, _, extra = loop.partition("+")
    extras = set(extra.split("+")) - {""}
    scrape = bool(extras & {"scrape", "ops"})  # ops = an operator's setup: INFO logging and a scraper
    info = bool(extras & {"info", "ops"})
    data = Path(tempfile.mkdtemp(prefix="mediasrv-pacing-"))
    (data / "media").mkdir()
    rate = 16000 if codec == "G722" else 8000  # a wideband prompt for the wideband codec
    t = np.arange(10 * rate) / rate  # 10 s mono int16
    soundfile.write(data / "media" / "prompt.wav",
                    (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16), rate, subtype="PCM_16")
    sip_port, http_port = free_port(socket.SOCK_DGRAM, n), free_port(socket.SOCK_STREAM, n)
    log_path = data / "server.log"
    cmd = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "mediasrv", "serve", "--sip", f"127.0.0.1:{sip_port}",
           "--http", f"127.0.0.1:{http_port}", "--rtp-ports", f"{RTP_LO}-{RTP_HI}", "--data-dir", str(data),
           "--max-calls", str(n + 100), "--rtp-timeout", "0", "--log-level", "INFO" if info else "WARNING"] + (["--asyncio"] if loop == "asyncio" else [])
    if REALTIME:
        cmd += ["--realtime-priority", str(REALTIME)]
    if not silence:
        # A call sends nothing until its playback starts: set-up is not slowed by silence for calls
        # already answered, and a call whose playback never started shows up as a silent port
        # instead of being measured as if it played.
        cmd.append("--no-silence")
    notes: list[str] = []
    rx: Receiver | None = None
    env = dict(os.environ)
    if codec is not None:
        env["MEDIASRV_CODECS"] = "G722,PCMU,PCMA"  # the same server set-up for every codec's row
    with open(log_path, "w") as log:
        server = spawn(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        http = f"http://127.0.0.1:{http_port}"
        wait_http(f"{http}/healthz", server)
        rx = Receiver(receiver_exe, n, seconds)
        playing, stats, cpu, steal = asyncio.run(asyncio.wait_for(
            drive_calls(sip_port, http, n, seconds, rx, server.pid, setup_timeout, call_rate, notes, scrape,
                        codec or "PCMU", volume_db),
            2 * setup_timeout + seconds + 120))
    finally:
        if rx is not None:
            rx.stop()
        alive = server.poll() is None
        reap(server, 15)
        lines = log_path.read_text(errors="replace").splitlines()
        bad = [ln for ln in lines if ("WARNING" in ln or "ERROR" in ln or "Traceback" in ln or "Error" in ln)
               and "has no token" not in ln]
        if not alive:
            notes.append(f"server had exited (rc {server.returncode}) before the end of the row")
        if bad:
            kinds = Counter(ln.split(": ", 1)[-1][:90] for ln in bad)
            notes.append(f"server log: {len(bad)} warning/error lines, most common: {kinds.most_common(3)}")
        shutil.rmtree(data, ignore_errors=True)
        label = loop + (f"+{extra}" if extra else "") + (f" {codec}" if codec else "")
        NOTES.extend(f"  mediasrv {label} N={n}: {note}" for note in notes)
    return Row(f"mediasrv {label}", n, playing, stats, cpu, stats["window_s"] or seconds, steal, notes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="100,500,1000,2000", help="comma-separated call counts")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window per row")
    ap.add_argument("--loops", default="uvloop,asyncio",
                    help="mediasrv rows: uvloop and/or asyncio; NAME+scrape scrapes /metrics every second")
    ap.add_argument("--setup-timeout", type=float, default=120.0,
                    help="budget for placing calls, and again for starting playbacks; a row then measures "
                         "what started")
    ap.add_argument("--call-rate", type=float, default=200.0,
                    help="INVITEs per second at most (also at most 100 unanswered at a time)")
    ap.add_argument("--silence", action="store_true",
                    help="run the server with its default silence before playback (default: --no-silence)")
    ap.add_argument("--repeat", type=int, default=1, metavar="K",
                    help="run the C/mediasrv pair K times per N, alternating, and print the medians of the ratios")
    ap.add_argument("--realtime", type=int, default=0, metavar="PRIO",
                    help="run the C sender (chrt -f) and mediasrv (--realtime-priority) under SCHED_FIFO PRIO; 0 = off")
    ap.add_argument("--codecs", default="",
                    help="comma-separated codecs (PCMU, PCMA, G722): each mediasrv row once per codec, same run")
    ap.add_argument("--volume-db", type=float, default=0.0,
                    help="play at this gain (not 0: every packet through the per-packet mix and encode)")
    ap.add_argument("--deadline", type=float, default=0.0,
                    help="global limit in seconds (default: computed from the rows)")
    args = ap.parse_args()
    global REALTIME
    REALTIME = args.realtime
    ns = [int(x) for x in args.n.split(",")]
    loops = [x for x in args.loops.split(",") if x]
    codecs: list[str | None] = [c.strip().upper() for c in args.codecs.split(",") if c.strip()] or [None]
    if any(c not in ("PCMU", "PCMA", "G722") for c in codecs if c is not None):
        ap.error("--codecs takes PCMU, PCMA and/or G722")
    if any(lp.partition("+")[0] not in ("uvloop", "asyncio")
           or not set(lp.partition("+")[2].split("+")) <= {"", "scrape", "info", "ops"} for lp in loops):
        ap.error("--loops takes uvloop and/or asyncio, each optionally with +scrape, +info (INFO logging) or +ops (both)")
    for tool in ("gcc", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is required", file=sys.stderr)
            return 1
    if args.call_rate <= 0:
        ap.error("--call-rate must be positive")
    if max(ns) * 2 + RECEIVER_BASE >= RTP_LO:
        ap.error("receiver ports would overlap the server's RTP range")
    deadline = args.deadline or max(1, args.repeat) * len(ns) * (
        (args.seconds + 30) + len(loops) * len(codecs) * (2 * args.setup_timeout + args.seconds + 150)) + 60
    watchdog(deadline)
    os.sched_setaffinity(0, {int(BENCH_CPU)})
    tmp = Path(tempfile.mkdtemp(prefix="mediasrv-bench-c-"))
    try:
        receiver_exe, sender_exe = build(tmp)
        print(f"window {args.seconds:g} s per row after {WARMUP_S + SKIP_S:g} s warm-up; mediasrv and the C sender "
              f"pinned to CPU {SERVER_CPU}, receiver and this UAC/bench process to CPU {BENCH_CPU} (taskset); "
              f"{f'both senders under SCHED_FIFO {REALTIME}; ' if REALTIME else ''}loopback only; deviation = |inter-arrival - 20 ms| from kernel receive timestamps (10 us bins); "
              f"ratios xC are to the C sender at the same N in this run; global deadline {deadline:.0f} s",
              flush=True)
        print(HEADER, flush=True)
        summary: list[str] = []
        for n in ns:
            rows = [(loop, codec) for loop in loops for codec in codecs]
            ratios: dict[str, list[tuple[float, float, float]]] = {
                loop + (f" {codec}" if codec else ""): [] for loop, codec in rows}
            for _ in range(max(1, args.repeat)):
                c_row: Row | None = None
                try:
                    c_row = run_c(receiver_exe, sender_exe, n, args.seconds)
                    print(fmt(c_row, c_row), flush=True)
                except Exception as exc:  # noqa: BLE001 - report and go on
                    print(f"{'C paced sender':16} {n:5d} failed: {type(exc).__name__}: {exc}", flush=True)
                for loop, codec in rows:
                    key = loop + (f" {codec}" if codec else "")
                    try:
                        try:
                            r = run_mediasrv(receiver_exe, n, args.seconds, loop, args.setup_timeout, args.call_rate,
                                             args.silence, codec, args.volume_db)
                        except OSError as exc:  # a port picked as free was taken meanwhile: once more
                            if exc.errno != errno.EADDRINUSE:
                                raise
                            r = run_mediasrv(receiver_exe, n, args.seconds, loop, args.setup_timeout, args.call_rate,
                                             args.silence, codec, args.volume_db)
                    except Exception as exc:  # noqa: BLE001 - an overloaded row is a result too
                        print(f"{'mediasrv ' + key:16} {n:5d} failed: {type(exc).__name__}: {exc}"[:300], flush=True)
                        continue
                    print(fmt(r, c_row), flush=True)
                    if c_row is not None and c_row.p99 and c_row.us_per_packet:
                        ratios[key].append((r.p99, r.p99 / c_row.p99, r.us_per_packet / c_row.us_per_packet))
            if args.repeat > 1:
                for loop, got in ratios.items():
                    if got:
                        p99s, rp, ru = (sorted(x) for x in zip(*got, strict=True))
                        summary.append(f"  mediasrv {loop} N={n}: {len(got)} pairs; our p99 {' / '.join(f'{v:.2f}' for v in p99s)} ms; "
                                       f"median p99 xC {float(np.median(rp)):.2f} (all: {' / '.join(f'{v:.2f}' for v in rp)}); "
                                       f"median us xC {float(np.median(ru)):.2f} (all: {' / '.join(f'{v:.2f}' for v in ru)})")
        if summary:
            print("medians over the alternating pairs:")
            print("\n".join(summary), flush=True)
        if NOTES:
            print("notes:")
            print("\n".join(NOTES), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
