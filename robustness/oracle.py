"""The oracle checked after inputs, and the per-suite tally it fills.

Alive; an OPTIONS from a clean source answered within 2 s; no new "Traceback" in the server's
output; fds, RSS, calls, asyncio tasks and RTP ports compared before → after a suite (after the
calls it left were hung up through the API, so growth means a leak, not a call in progress);
datagrams and connections counted on addresses only the inputs named.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .netns import ExternalTap
from .sipmsg import STRAY_HOSTS, Targets, UdpPeer, options, status_of
from .sut import ServerUnderTest

T = TypeVar("T")
PROBE_TIMEOUT_S = 2.0
RECHECK_S = 5.0
SLOW_S = 0.5  # an OPTIONS answered later than this after one input: that input held the event loop
RSS_SLACK_KB = 20 * 1024
BENIGN_REMOTES: set[str] = set()  # host:port of the harness's origin (pooled connections to it are not growth)


class StraySinks:
    """UDP and TCP listeners on 127.77.0.1-20 at the stray SIP, RTP and RTCP ports; counts arrivals."""

    def __init__(self, t: Targets) -> None:
        self.counts: Counter[str] = Counter()  # "sip" | "rtp" -> datagrams/connections
        self.where: Counter[str] = Counter()
        self._sel = selectors.DefaultSelector()
        self._socks: list[socket.socket] = []
        self._stop = False
        kinds = {t.stray_sip: "sip", t.stray_rtp: "rtp", t.stray_rtp + 1: "rtp"}
        for host in STRAY_HOSTS:
            for port, kind in kinds.items():
                for st in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(socket.AF_INET, st)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        s.bind((host, port))
                    except OSError:
                        s.close()
                        continue
                    if st == socket.SOCK_STREAM:
                        s.listen(64)
                    s.setblocking(False)
                    self._sel.register(s, selectors.EVENT_READ, (kind, f"{'udp' if st == socket.SOCK_DGRAM else 'tcp'} {host}:{port}", st))
                    self._socks.append(s)
        self._thread = threading.Thread(target=self._run, daemon=True, name="stray-sinks")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._sel.select(0.2):
                kind, where, st = key.data
                s: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    if st == socket.SOCK_DGRAM:
                        s.recv(65535)
                    else:
                        conn, _ = s.accept()
                        conn.close()
                except OSError:
                    continue
                self.counts[kind] += 1
                self.where[where] += 1

    def total(self) -> tuple[int, int]:
        return self.counts["sip"], self.counts["rtp"]

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        for s in self._socks:
            s.close()


def probe(sut: ServerUnderTest, t: Targets, timeout: float = PROBE_TIMEOUT_S) -> float | None:
    """Seconds an OPTIONS from a fresh loopback source took to be answered, or None."""
    peer = UdpPeer(("127.0.0.1", sut.sip_port), host="127.0.0.9")
    try:
        t0 = time.monotonic()
        msg = options(t, peer.addr)
        interval = 0.5  # retransmitted like a SIP client (Timer E): a datagram the kernel dropped is not a hang
        while True:
            peer.send(msg)
            left = timeout - (time.monotonic() - t0)
            status, _ = peer.final(min(interval, max(0.0, left)))
            if status is not None:
                return time.monotonic() - t0
            if time.monotonic() - t0 >= timeout:
                return None
            interval *= 2
    finally:
        peer.close()


@dataclass
class Snapshot:
    fds: int
    rss_kb: int
    calls: int
    tasks: int
    ports: int

    @classmethod
    def of(cls, sut: ServerUnderTest) -> Snapshot:
        return cls(sut.fds(), sut.rss_kb(), sut.active_calls(), sut.tasks(), sut.rtp_ports())


@dataclass
class Finding:
    kind: str  # hang | crash | traceback | wrong | 5xx | growth | stray-ext | unreproduced-*
    case: str
    detail: str = ""
    input: str = ""  # the input's bytes as latin-1 text (repr-escaped in the JSON), to replay it


def input_of(case: object) -> bytes | None:
    """The raw bytes a case sent, when it carries them (SipCase.data, or a bytes item of a tuple)."""
    if isinstance(case, bytes):
        return case
    data = getattr(case, "data", None)
    if isinstance(data, bytes):
        return data
    if isinstance(case, tuple | list):
        for item in case:
            if isinstance(item, bytes):
                return item
            got = input_of(item)
            if got is not None:
                return got
    return None


@dataclass
class SuiteResult:
    name: str
    sent: int = 0
    hangs: int = 0
    crashes: int = 0
    tracebacks: int = 0
    wrong: int = 0
    http_5xx: int = 0
    restarts: int = 0
    fds_before: dict[str, str] = field(default_factory=dict)
    calls_left: int = 0  # calls still up at the end of the suite (before the API hang-up)
    before: Snapshot | None = None
    after: Snapshot | None = None
    stray_sip: int = 0
    stray_rtp: int = 0
    stray_ext: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    def add(self, kind: str, case: str, detail: str = "") -> None:
        self.findings.append(Finding(kind, case, detail[:300]))

    def http_status(self, case: str, status: int | None) -> None:
        """Count a 5xx once per input (a replayed batch sends its inputs again)."""
        if status is not None and status >= 500 and not any(f.kind == "5xx" and f.case == case for f in self.findings):
            self.http_5xx += 1
            self.add("5xx", case, f"HTTP {status}")


class Checker(Generic[T]):
    """Sends cases through *send*, checks the oracle every *every* inputs; on a failed check it
    replays that batch one input at a time (restarting a dead or hung server) to name the culprit."""

    def __init__(self, sut: ServerUnderTest, t: Targets, result: SuiteResult,
                 send: Callable[[T], str | None], name: Callable[[T], str], every: int = 1,
                 tap: ExternalTap | None = None) -> None:
        self.sut, self.t, self.result = sut, t, result
        self.send, self.name, self.every = send, name, max(1, every)
        self._tb = sut.tracebacks()
        self.tap = tap
        self._ext = dict(tap.seen) if tap else {}
        self.last_probe_s = 0.0

    def run(self, cases: Iterable[T]) -> None:
        batch: list[T] = []
        for case in cases:
            self._one(case)
            batch.append(case)
            if len(batch) >= self.every:
                self._check(batch)
                batch = []
        if batch:
            self._check(batch)

    def _one(self, case: T) -> None:
        try:
            wrong = self.send(case)
        except OSError as exc:
            wrong = None
            self.result.add("harness", self.name(case), repr(exc))
        self.result.sent += 1
        if wrong:
            self.result.wrong += 1
            self.result.add("wrong", self.name(case), wrong)
            raw = input_of(case)
            if raw is not None:
                self.result.findings[-1].input = raw[:65536].decode("latin-1")

    def _state(self) -> str | None:
        if not self.sut.alive():
            return "crash"
        took = probe(self.sut, self.t)
        if took is None and self.sut.alive():
            # a loaded machine can delay one answer past 2 s: ask once more, for longer, before calling
            # it a hang (a backtracking input holds the loop for far longer than this)
            again = probe(self.sut, self.t, RECHECK_S)
            took = None if again is None else PROBE_TIMEOUT_S + again
        if took is None:
            return "crash" if not self.sut.alive() else "hang"
        self.last_probe_s = took
        if self.sut.tracebacks() > self._tb:
            return "traceback"
        return None

    def _check(self, batch: Sequence[T]) -> None:
        self.last_probe_s = 0.0
        self._check_batch(batch)
        if len(batch) == 1 and self.last_probe_s > SLOW_S:  # answered, but late: the input held the loop
            self.result.add("slow", self.name(batch[0]), f"OPTIONS answered after {self.last_probe_s:.2f} s")
            raw = input_of(batch[0])
            if raw is not None:
                self.result.findings[-1].input = raw[:65536].decode("latin-1")

    def _check_batch(self, batch: Sequence[T]) -> None:
        if self.tap is not None:  # sends outside loopback: name the batch (they may come late, so no replay)
            seen = dict(self.tap.seen)
            new = {k: v - self._ext.get(k, 0) for k, v in seen.items() if v > self._ext.get(k, 0)}
            if new:
                where = self.name(batch[0]) + (f" .. {self.name(batch[-1])}" if len(batch) > 1 else "")
                self.result.add("stray-ext", where, ", ".join(f"{k} x{v}" for k, v in new.items()))
            self._ext = seen
        bad = self._state()
        if bad is None:
            return
        if len(batch) == 1:
            self._record(bad, batch[0])
            return
        delta = self.sut.tracebacks() - self._tb
        self._recover(bad)
        found = False
        for case in batch:  # replay to find which inputs did it
            self.send(case)
            self.last_probe_s = 0.0
            b = self._state()
            if b is not None:
                self._record(b, case)
                found = True
            elif self.last_probe_s > SLOW_S:
                self.result.add("slow", self.name(case), f"OPTIONS answered after {self.last_probe_s:.2f} s")
                found = True
        if not found:
            self.result.add(f"unreproduced-{bad}", f"{self.name(batch[0])} .. {self.name(batch[-1])}",
                            "the batch failed the check; no single input did on replay")
            if bad == "traceback":
                self.result.tracebacks += max(1, delta)
            elif bad == "hang":
                self.result.hangs += 1

    def _record(self, kind: str, case: T) -> None:
        self._record_kind(kind, case)
        raw = input_of(case)
        if raw is not None and self.result.findings:
            self.result.findings[-1].input = raw[:65536].decode("latin-1")

    def _record_kind(self, kind: str, case: T) -> None:
        name = self.name(case)
        if kind == "traceback":
            now = self.sut.tracebacks()
            self.result.tracebacks += now - self._tb
            self.result.add("traceback", name, last_exception(self.sut.log_text()))
            self._tb = now
        else:
            if kind == "hang":
                self.result.hangs += 1
            else:
                self.result.crashes += 1
            self.result.add(kind, name, self.sut.log_tail(300) if kind == "crash" else "OPTIONS unanswered for 2 s, then 5 s")
            self._recover(kind)

    def _recover(self, kind: str) -> None:
        if kind in ("hang", "crash"):
            self.sut.restart()
            self.result.restarts += 1
            self.result.before = Snapshot.of(self.sut)  # growth is then counted from the restart
        self._tb = self.sut.tracebacks()


def last_exception(log: str) -> str:
    """The exception line ending the last traceback in *log* (the first unindented line after it)."""
    block = log.rsplit("Traceback (most recent call last):", 1)
    if len(block) < 2:
        return ""
    for line in block[1].splitlines()[1:]:
        if line and not line.startswith((" ", "\t")):
            return line.strip()
    return ""


def begin(sut: ServerUnderTest, sinks: StraySinks, tap: ExternalTap | None, name: str) -> tuple[SuiteResult, tuple[int, int, int], float]:
    result = SuiteResult(name)
    result.before = Snapshot.of(sut)
    result.fds_before = sut.fd_targets()
    return result, (*sinks.total(), tap.total() if tap else 0), time.monotonic()


def finish(sut: ServerUnderTest, sinks: StraySinks, tap: ExternalTap | None, result: SuiteResult,
           mark: tuple[int, int, int], t0: float, settle_s: float = 1.0) -> SuiteResult:
    time.sleep(settle_s)
    result.calls_left = max(0, sut.active_calls())
    sut.hangup_all()
    time.sleep(0.5)
    stuck = [f"{c.get('direction', '?')}/{c.get('state')}" for c in (sut.get_json("/v1/calls") or {}).get("calls", [])
             if c.get("state") != "ended"]
    if stuck:
        result.add("growth", "calls not ended by DELETE /v1/calls/{id}", ", ".join(sorted(set(stuck))) + f" ({len(stuck)})")
    result.after = Snapshot.of(sut)
    sip, rtp = sinks.total()
    result.stray_sip, result.stray_rtp = sip - mark[0], rtp - mark[1]
    result.stray_ext = (tap.total() if tap else 0) - mark[2]
    result.seconds = time.monotonic() - t0
    b, a = result.before, result.after
    if b and a and not stuck and (a.fds > b.fds or a.ports > b.ports or a.tasks > b.tasks):
        time.sleep(2.0)  # closes in flight (TCP teardown, a decode worker exiting): measure once more
        result.after = a = Snapshot.of(sut)
    if stuck:
        result.add("growth", "resources held by calls not ended", f"fds {b.fds if b else '?'}->{a.fds}, "
                   f"ports {b.ports if b else '?'}->{a.ports}, tasks {b.tasks if b else '?'}->{a.tasks}")
    elif b and a:
        for what, x, y, slack in (("fds", b.fds, a.fds, 0), ("ports", b.ports, a.ports, 0),
                                  ("tasks", b.tasks, a.tasks, 0), ("rss_kb", b.rss_kb, a.rss_kb, RSS_SLACK_KB)):
            if y > x + slack:
                detail = f"{x} -> {y}"
                if what == "fds" and result.fds_before:
                    now = sut.fd_targets()
                    new = sorted({v for k, v in now.items() if result.fds_before.get(k) != v})
                    if new and all(any(v.endswith("->" + b) for b in BENIGN_REMOTES) for v in new):
                        continue  # the server's keep-alive connections to the harness's own origin
                    detail += f"; new: {', '.join(new)[:240]}"
                result.add("growth", what, detail)
    return result


def status_ok(status: int | None, expect: str) -> str | None:
    """None when *status* fits *expect* (accept: not 400; reject: not 2xx; refuse: no 2xx; any)."""
    if expect == "reject" and status is not None and 200 <= status < 300:
        return f"answered {status} to an input that must be refused"
    if expect == "accept" and status == 400:
        return "400 to a valid message"
    return None


__all__ = ["Checker", "Snapshot", "StraySinks", "SuiteResult", "begin", "finish", "probe", "status_ok", "status_of"]
