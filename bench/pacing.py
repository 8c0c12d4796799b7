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

``--paired K`` measures a ``+scrape``/``+ops`` row as K pairs of back-to-back windows of one server
and one set of calls, plain and scraped in ABBA order (the receiver's WINDOWS argument), and
prints the scraped/plain ratio of p99 and of us/pkt per pair and their medians. Between separate
rows (separate servers, minutes apart) this shared VM's p99 moves by several times; between
adjacent windows of one server it moves far less, so a small effect can be told from noise.
The logging level is the row's for all its windows (at INFO, the steady state logs only the
scrapes' access lines; the notes give the server's log lines per window). A row without a
scraper (``uvloop``) measures K plain/plain pairs the same way: the ratios' noise floor (A/A).
Each summary also gives, per window, the share of packets off by >= 0.5 ms and >= 2 ms::

    python bench/pacing.py --n 1500 --seconds 10 --repeat 3 --loops uvloop+ops --paired 3
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
PAIRED_SETTLE_S = 10.0  # and this much longer before the first of --paired windows
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
    def __init__(self, exe: Path, n: int, seconds: float, windows: int = 1) -> None:
        self.seconds, self.windows = seconds, windows
        self.proc = spawn(["taskset", "-c", BENCH_CPU, str(exe), str(RECEIVER_BASE), str(n), str(seconds),
                           str(SKIP_S), "20", "0", "900", str(windows)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "ready" not in line:
            reap(self.proc)
            raise RuntimeError(f"receiver failed to start: {line!r}")

    def start_window(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def result(self) -> dict:
        """Waits for the window to end (the receiver stops by itself) and parses its JSON."""
        return self.results()[-1]

    def results(self) -> list[dict]:
        """Every window's JSON, in order, once the last window has ended."""
        try:
            out, _ = self.proc.communicate(timeout=self.seconds * self.windows + 20)
        except subprocess.TimeoutExpired:
            reap(self.proc)
            raise RuntimeError("receiver did not finish its windows") from None
        CHILDREN.discard(self.proc.pid)
        return [json.loads(line) for line in out.strip().splitlines() if '"started"' in line]

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


@dataclass
class ScrapeLog:
    times: list[float] = field(default_factory=list)
    size: int = 0

    def note(self) -> str:
        return (f"scraped /metrics {len(self.times)} times, median {1000 * float(np.median(self.times or [0])):.1f} ms, "
                f"max {1000 * max(self.times or [0]):.1f} ms, {self.size / 1000:.0f} kB")


async def scrape_metrics(http: str, log: ScrapeLog, interval: float = 1.0) -> None:
    """GET /metrics every *interval* s, as a Prometheus server would, until cancelled; *log* keeps what it saw."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        try:
            while True:
                t = time.monotonic()
                try:
                    async with s.get(f"{http}/metrics") as resp:
                        log.size = len(await resp.read())
                    log.times.append(time.monotonic() - t)
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - t)))
        except asyncio.CancelledError:
            pass


async def server_metrics(http: str) -> dict[str, float]:
    """One /metrics read, as {series: value} (the bench's own reads, outside the windows)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s, s.get(f"{http}/metrics") as resp:
        text = await resp.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def scrape_cost(before: dict[str, float], after: dict[str, float], scraped_cpu_s: float) -> str:
    """What the server says its scrapes cost (the time they held its event loop,
    mediasrv_metrics_scrape_loop_seconds) against its CPU time over the scraped windows, and the
    cyclic GC's collections and pause time over all the windows."""
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    total = delta("mediasrv_metrics_scrape_loop_seconds_sum")
    count = delta("mediasrv_metrics_scrape_loop_seconds_count")
    share = f"{100 * total / scraped_cpu_s:.2f} % of the server's CPU time in the scraped windows" if scraped_cpu_s else "?"
    def gen(name: str, g: int) -> float:
        return delta(f'{name}{{generation="{g}"}}')

    gc = ", ".join(f"gen{g} {gen('python_gc_collections_total', g):.0f} "
                   f"({1000 * gen('mediasrv_gc_pause_seconds_sum', g):.0f} ms)" for g in range(3))
    return (f"the scrapes held the server's event loop {1000 * total / count if count else float('nan'):.2f} ms each "
            f"on average ({count:.0f} scrapes, {1000 * total:.0f} ms in all = {share}), the last one "
            f"{1000 * after.get('mediasrv_metrics_scrape_longest_slice_seconds', float('nan')):.2f} ms at most at a time; "
            f"GC collections over "
            f"all windows (pause): {gc}")


@dataclass
class Window:
    scraped: bool
    stats: dict
    cpu_s: float
    steal_s: float
    log_lines: int  # lines the server logged during the window


def log_line_count(path: Path | None) -> int:
    if path is None:
        return 0
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))


async def drive_calls(sip_port: int, http: str, n: int, seconds: float, rx: Receiver, server_pid: int,
                      setup_timeout: float, call_rate: float,
                      notes: list[str], schedule: list[bool], codec: str = "PCMU",
                      volume_db: float = 0.0, log_path: Path | None = None) -> tuple[int, list[Window]]:
    """Places the calls, starts their playbacks, then measures one window per *schedule* entry,
    back to back, scraping /metrics in the windows marked True."""
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
        # paired windows compare a server with itself: let the set-up's after-effects (the first
        # windows ran up to 20 % more CPU per packet than later ones) pass before the first window
        before = await server_metrics(http) if any(schedule) else {}
        await asyncio.sleep(WARMUP_S + SKIP_S + (PAIRED_SETTLE_S if len(schedule) > 1 else 0.0))
        scrapes = ScrapeLog()
        measured: list[tuple[bool, float, float, int]] = []
        c0, st0, l0 = cpu_seconds(server_pid), steal_seconds(SERVER_CPU), log_line_count(log_path)
        rx.start_window()
        end = time.monotonic()
        for scraped in schedule:
            scraper = asyncio.ensure_future(scrape_metrics(http, scrapes)) if scraped else None
            end += seconds  # the receiver's windows are back to back on its own clock; ours follow them
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            if scraper is not None:
                scraper.cancel()
                await scraper
            c1, st1, l1 = cpu_seconds(server_pid), steal_seconds(SERVER_CPU), log_line_count(log_path)
            measured.append((scraped, c1 - c0, st1 - st0, l1 - l0))
            c0, st0, l0 = c1, st1, l1
        if any(schedule):
            notes.append(scrapes.note())
            notes.append(scrape_cost(before, await server_metrics(http), sum(cpu for sc, cpu, _, _ in measured if sc)))
        stats_all = await asyncio.get_running_loop().run_in_executor(None, rx.results)
        if len(stats_all) != len(measured):
            raise RuntimeError(f"receiver reported {len(stats_all)} windows, expected {len(measured)}")
        windows = [Window(sc, st, cpu, steal, lines) for (sc, cpu, steal, lines), st in zip(measured, stats_all, strict=True)]
    finally:
        for c in calls:
            try:
                await uac.hangup(c.call_id)
            except Exception:  # noqa: BLE001 - a call the server already ended
                pass
        await asyncio.sleep(1.0 + len(calls) / 1000)
        await uac.stop()
    return playing, windows


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


def paired_schedule(pairs: int) -> list[bool]:
    """Plain (False) and scraped (True) windows in ABBA order, so a slow drift over the row
    favours neither: A B B A A B B A ..."""
    return [(i % 2 == 1) ^ (i // 2 % 2 == 1) for i in range(2 * pairs)]


def run_mediasrv(receiver_exe: Path, n: int, seconds: float, loop: str, setup_timeout: float,
                 call_rate: float, silence: bool, codec: str | None = None, volume_db: float = 0.0,
                 paired: int = 0) -> list[Row]:
    """One server, one set of calls; one window, or with *paired* > 0 that many plain/scraped pairs
    of windows (ABBA) from the same server and calls: one row per window."""
    loop, _, extra = loop.partition("+")
    extras = set(extra.split("+")) - {""}
    scrape = bool(extras & {"scrape", "ops"})  # ops = an operator's setup: INFO logging and a scraper
    info = bool(extras & {"info", "ops"})
    # --paired on a row without a scraper: as many plain pairs, the noise floor (A/A) of the same comparison
    schedule = (paired_schedule(paired) if scrape else [False] * (2 * paired)) if paired else [scrape]
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
        rx = Receiver(receiver_exe, n, seconds, len(schedule))
        playing, windows = asyncio.run(asyncio.wait_for(
            drive_calls(sip_port, http, n, seconds, rx, server.pid, setup_timeout, call_rate, notes, schedule,
                        codec or "PCMU", volume_db, log_path),
            2 * setup_timeout + seconds * len(schedule) + 120))
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
    if len(windows) > 1:
        NOTES.append(f"  mediasrv {label} N={n}: server log lines per window, plain / scraped: "
                     f"{' '.join(str(w.log_lines) for w in windows if not w.scraped)} / "
                     f"{' '.join(str(w.log_lines) for w in windows if w.scraped)}")
    return [Row(f"mediasrv {label}" + ("" if len(windows) == 1 else (" [scraped]" if w.scraped else " [plain]")),
                n, playing, w.stats, w.cpu_s, w.stats["window_s"] or seconds, w.steal_s, notes) for w in windows]


def tail_share(row: Row, ms: float) -> float:
    """Share of the window's packets whose |inter-arrival - 20 ms| is at least *ms*."""
    hist = np.asarray(row.stats["hist"], dtype=np.float64)
    total = hist.sum()
    return float(hist[int(ms * 1000 / row.stats["bin_us"]):].sum() / total) if total else float("nan")


def paired_summary(key: str, n: int, rows: list[Row], c_row: Row | None, out: list[str]) -> None:
    """Adjacent windows of one server as pairs, (plain, scraped) or for a row without a scraper
    (first, second): the ratio second/first of p99 and of us/pkt per pair and their medians, the
    share of packets off by >= 0.5 and 2 ms, and the xC medians of each kind when a C row ran."""
    pairs = [(rows[i], rows[i + 1]) if "scraped" not in rows[i].sender else (rows[i + 1], rows[i])
             for i in range(0, len(rows) - 1, 2)]
    a_name, b_name = ("plain", "scraped") if any("scraped" in r.sender for r in rows) else ("plain", "plain again")
    rp = [b.p99 / a.p99 for a, b in pairs if a.p99]
    ru = [b.us_per_packet / a.us_per_packet for a, b in pairs if a.us_per_packet]
    first = [a for a, _ in pairs]
    second = [b for _, b in pairs]

    def med(xs: list[float]) -> str:
        return f"{float(np.median(xs)):.3f}" if xs else "nan"

    def tails(rs: list[Row]) -> str:
        return " / ".join(f"{100 * tail_share(r, 0.5):.2f}:{100 * tail_share(r, 2.0):.3f}" for r in rs)

    line = (f"  mediasrv {key} N={n}: {len(pairs)} pairs; p99 {a_name} {' / '.join(f'{a.p99:.2f}' for a in first)} ms, "
            f"{b_name} {' / '.join(f'{b.p99:.2f}' for b in second)} ms; us/pkt {a_name} "
            f"{' / '.join(f'{a.us_per_packet:.2f}' for a in first)}, {b_name} {' / '.join(f'{b.us_per_packet:.2f}' for b in second)}; "
            f"% of packets off by >= 0.5 ms : >= 2 ms, {a_name} {tails(first)}, {b_name} {tails(second)}; "
            f"ratio {b_name}/{a_name}: p99 median {med(rp)} (all {' / '.join(f'{v:.2f}' for v in rp)}), "
            f"us/pkt median {med(ru)} (all {' / '.join(f'{v:.3f}' for v in ru)})")
    if c_row is not None and c_row.p99 and c_row.us_per_packet:
        line += (f"; median p99 xC {a_name} {med([a.p99 / c_row.p99 for a in first])} {b_name} "
                 f"{med([b.p99 / c_row.p99 for b in second])}; median us xC {a_name} "
                 f"{med([a.us_per_packet / c_row.us_per_packet for a in first])} {b_name} "
                 f"{med([b.us_per_packet / c_row.us_per_packet for b in second])}")
    a_pool, b_pool = pooled(first), pooled(second)
    line += (f"; pooled over the pairs: p99 {a_name} {a_pool[0]:.2f} ms, {b_name} {b_pool[0]:.2f} ms (ratio "
             f"{b_pool[0] / a_pool[0] if a_pool[0] else float('nan'):.3f}); us/pkt {a_name} {a_pool[1]:.3f}, {b_name} "
             f"{b_pool[1]:.3f} (ratio {b_pool[1] / a_pool[1] if a_pool[1] else float('nan'):.3f})")
    out.append(line)


def pooled(rows: list[Row]) -> tuple[float, float]:
    """(p99 ms of the summed histograms, CPU us per packet over all the windows) of *rows*:
    many short interleaved windows pooled see the host's bursts of noise alike."""
    if not rows:
        return float("nan"), float("nan")
    width = max(len(r.stats["hist"]) for r in rows)
    hist = np.zeros(width)
    for r in rows:
        hist[:len(r.stats["hist"])] += np.asarray(r.stats["hist"], dtype=np.float64)
    packets = sum(r.stats["packets"] for r in rows)
    cdf = np.cumsum(hist) / hist.sum() if hist.sum() else None
    p99 = int(np.searchsorted(cdf, 0.99)) * rows[0].stats["bin_us"] / 1000 if cdf is not None else float("nan")
    return p99, 1e6 * sum(r.cpu_s for r in rows) / packets if packets else float("nan")


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
    ap.add_argument("--paired", type=int, default=0, metavar="K",
                    help="rows with +scrape/+ops/... measure K plain/scraped pairs of windows from one server and one "
                         "set of calls (ABBA order) instead of one window each: the logging level is the row's "
                         "throughout, only the scraper is switched; per-pair ratios remove run-to-run noise. Rows "
                         "without a scraper measure K plain/plain pairs: the noise floor of the same ratios")
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
        (args.seconds + 30) + len(loops) * len(codecs) * (2 * args.setup_timeout
                                                          + args.seconds * max(1, 2 * args.paired) + 150)) + 60
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
        paired_all: list[str] = []
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
                            got_rows = run_mediasrv(receiver_exe, n, args.seconds, loop, args.setup_timeout,
                                                    args.call_rate, args.silence, codec, args.volume_db, args.paired)
                        except OSError as exc:  # a port picked as free was taken meanwhile: once more
                            if exc.errno != errno.EADDRINUSE:
                                raise
                            got_rows = run_mediasrv(receiver_exe, n, args.seconds, loop, args.setup_timeout,
                                                    args.call_rate, args.silence, codec, args.volume_db, args.paired)
                    except Exception as exc:  # noqa: BLE001 - an overloaded row is a result too
                        print(f"{'mediasrv ' + key:16} {n:5d} failed: {type(exc).__name__}: {exc}"[:300], flush=True)
                        continue
                    for r in got_rows:
                        print(fmt(r, c_row), flush=True)
                    if len(got_rows) > 1:
                        paired_summary(key, n, got_rows, c_row, paired_all)
                    elif c_row is not None and c_row.p99 and c_row.us_per_packet:
                        r = got_rows[0]
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
        if paired_all:
            print("adjacent windows of the same server and calls (scraped vs plain in ABBA order; a row without a scraper: "
                  "plain vs plain, the noise floor):")
            print("\n".join(paired_all), flush=True)
        if NOTES:
            print("notes:")
            print("\n".join(NOTES), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
