"""SIP-side suites: torture, PROTOS-style, advisory reproducers, mutation fuzzers, RTP/RTCP fuzz."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from . import rtpcases
from .mutate import mutate
from .netns import ExternalTap
from .oracle import Checker, StraySinks, SuiteResult, begin, finish, status_ok
from .sipcases import SipCase, call_id, invite, protos_cases, torture_cases
from .sipmsg import (
    Targets,
    UdpPeer,
    ack_and_bye,
    header,
    rand_tag,
    request,
    sdp,
    sdp_port,
    status_of,
    tcp_exchange,
)
from .sut import ServerUnderTest

T = TypeVar("T")


@dataclass
class Harness:
    sut: ServerUnderTest
    t: Targets
    sinks: StraySinks
    tap: ExternalTap | None
    long: bool = False
    seed: int = 1
    scale: float = 1.0  # multiplies the default run's input counts (the pytest runs a fraction)
    results: list[SuiteResult] = field(default_factory=list)
    peer: UdpPeer = field(init=False)

    def __post_init__(self) -> None:
        self.peer = UdpPeer(("127.0.0.1", self.sut.sip_port))
        # torture messages name hosts without a port in Via: a UAS answers to the source address at
        # port 5060, so that is where their responses can be read (free inside the harness's netns)
        try:
            self.peer5060: UdpPeer | None = UdpPeer(("127.0.0.1", self.sut.sip_port), port=5060)
        except OSError:
            self.peer5060 = None

    def checker(self, r: SuiteResult, send: Callable[[T], str | None], name: Callable[[T], str],
                every: int = 1) -> Checker[T]:
        return Checker(self.sut, self.t, r, send, name, every, tap=self.tap)

    @property
    def server(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sut.sip_port)

    def run(self, name: str, body: Callable[[SuiteResult], None], settle_s: float = 1.0) -> SuiteResult:
        result, mark, t0 = begin(self.sut, self.sinks, self.tap, name)
        try:
            body(result)
        finally:
            self.peer.recv_all()
            if not self.sut.alive():
                result.crashes += 1
                result.add("crash", "(after the last input)", self.sut.log_tail(300))
                self.sut.restart()
                result.restarts += 1
                result.before = None
            finish(self.sut, self.sinks, self.tap, result, mark, t0, settle_s * min(1.0, 0.3 + self.scale))
        self.results.append(result)
        return result

    # -- one SIP case ------------------------------------------------------------
    def complete(self, responses: list[bytes], transport: str = "UDP") -> None:
        """ACK and BYE every 2xx to an INVITE among *responses* (a well-behaved caller)."""
        for resp in responses:
            st = status_of(resp)
            cseq = header(resp, "cseq") or ""
            if st is not None and 200 <= st < 300 and cseq.upper().endswith("INVITE"):
                for msg in ack_and_bye(resp, self.t, self.peer.addr):
                    self.peer.send(msg)

    def send_case(self, case: SipCase, wait: float = 0.3) -> str | None:
        status: int | None = None
        for _ in range(case.repeat):
            if case.transport == "udp5060" and self.peer5060 is not None:
                self.peer5060.send(case.data)
                status, got = self.final(case.call_id, wait, self.peer5060)
            elif case.transport in ("udp", "udp5060"):
                self.peer.send(case.data)
                status, got = self.final(case.call_id, wait if case.expect != "any" or case.complete else 0.0)
            else:
                status, got, _ = tcp_exchange(self.server, case.data, wait, reset=case.transport == "tcp-reset")
            if case.complete:
                self.complete(got)
        return status_ok(status, case.expect)

    def final(self, cid: str | None, wait: float, peer: UdpPeer | None = None) -> tuple[int | None, list[bytes]]:
        got: list[bytes] = []
        end = time.monotonic() + wait
        while True:
            batch = (peer or self.peer).recv_all(max(0.0, end - time.monotonic()))
            got += batch
            for data in batch:
                st = status_of(data)
                if st is not None and st >= 200 and (cid is None or header(data, "call-id", "i") == cid):
                    return st, got
            if time.monotonic() >= end or not batch:
                return None, got

    # -- a real call (for RTP fuzzing) ---------------------------------------------
    def place_call(self, rtp_sock: socket.socket) -> tuple[bytes, int] | None:
        """INVITE whose SDP names *rtp_sock*; returns (200 response, server RTP port) after the ACK."""
        addr = rtp_sock.getsockname()
        msg = invite(self.t, self.peer.addr, 0, body=sdp(addr[0], addr[1]),
                     contact=f"<sip:robust@{self.peer.addr[0]}:{self.peer.addr[1]}>")
        self.peer.send(msg.render())
        status, got = self.final(call_id(msg), 3.0)
        ok = next((g for g in got if status_of(g) == 200 and header(g, "call-id", "i") == call_id(msg)), None)
        if ok is None:
            return None
        ack, _bye = ack_and_bye(ok, self.t, self.peer.addr)
        self.peer.send(ack)
        port = sdp_port(ok)
        return (ok, port) if port else None

    def hang_up(self, ok: bytes) -> None:
        _ack, bye = ack_and_bye(ok, self.t, self.peer.addr)
        self.peer.send(bye)
        self.final(header(ok, "call-id", "i"), 1.0)


def n_for(h: Harness, fast: int, long: int) -> int:
    return long if h.long else max(1, int(fast * h.scale))


# -- suites ------------------------------------------------------------------------------
def suite_torture(h: Harness) -> SuiteResult:
    cases = torture_cases()

    def body(r: SuiteResult) -> None:
        wait = 0.5 if h.scale >= 1 or h.long else 0.25  # how long a message the server drops costs
        h.checker(r, lambda c: h.send_case(c, wait), lambda c: c.name).run(cases)
    return h.run("torture (RFC 4475/5118)", body)


def suite_protos(h: Harness) -> SuiteResult:
    cases = list(protos_cases(h.t, h.peer.addr))
    if not h.long:
        rnd = random.Random(h.seed)
        keep_n = max(1, int(300 * h.scale))
        keep = [c for c in cases if "'a'x" in c.name or "header/" in c.name or "content-length" in c.name
                or "control" in c.name]
        cases = rnd.sample(keep, min(len(keep), keep_n))

    def body(r: SuiteResult) -> None:
        h.checker(r, lambda c: h.send_case(c, 0.15), lambda c: c.name).run(cases)
    return h.run(f"PROTOS c07-style ({len(cases)} of the generated)", body)


def _mutation_cases(h: Harness, seeds: list[bytes], n: int, tag: str, body_only: bool = False) -> Iterator[SipCase]:
    rnd = random.Random(f"{h.seed}-{tag}")
    for i in range(n):
        seed = seeds[i % len(seeds)]
        if body_only:
            head, _, sdp_body = seed.partition(b"\r\n\r\n")
            new_body = mutate(sdp_body, rnd, 8000)
            lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"content-length")]
            data = b"\r\n".join(lines) + f"\r\nContent-Length: {len(new_body)}\r\n\r\n".encode() + new_body
        else:
            data = mutate(seed, rnd)
        yield SipCase(f"{tag}/seed={h.seed}/#{i}", data, "udp", "any", None, True)


def sip_seeds(h: Harness, transport: str = "UDP") -> list[bytes]:
    src = h.peer.addr
    return [invite(h.t, src, 1, transport).render(), request("OPTIONS", h.t, src, transport).render(),
            request("BYE", h.t, src, transport).render(), request("REGISTER", h.t, src, transport).render()]


def suite_mut_udp(h: Harness) -> SuiteResult:
    n = n_for(h, 2000, 100_000)

    def send(c: SipCase) -> None:
        h.peer.send(c.data)
        h.complete(h.peer.recv_all())
        return None

    def body(r: SuiteResult) -> None:
        h.checker(r, send, lambda c: c.name, every=50).run(_mutation_cases(h, sip_seeds(h), n, "sip-udp"))
    return h.run("mutation SIP/UDP", body)


def suite_mut_sdp(h: Harness) -> SuiteResult:
    n = n_for(h, 1000, 100_000)
    seeds = [invite(h.t, h.peer.addr, i).render() for i in range(4)]

    def send(c: SipCase) -> None:
        h.peer.send(c.data)
        h.complete(h.peer.recv_all(0.002))
        return None

    def body(r: SuiteResult) -> None:
        h.checker(r, send, lambda c: c.name, every=25).run(_mutation_cases(h, seeds, n, "sdp", True))
    return h.run("mutation SDP in INVITE", body)


def suite_mut_tcp(h: Harness) -> SuiteResult:
    n = n_for(h, 600, 100_000)
    per_conn = 6

    def send(batch: list[SipCase]) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.settimeout(2)
            s.connect(h.server)
            for c in batch:
                s.sendall(c.data)
            s.settimeout(0.05)
            try:
                while s.recv(65535):
                    pass
            except OSError:
                pass
        except OSError:
            pass
        finally:
            if random.random() < 0.5:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        return None

    def batches() -> Iterator[list[SipCase]]:
        cases = _mutation_cases(h, sip_seeds(h, "TCP"), n, "sip-tcp")
        while True:
            b = [c for _, c in zip(range(per_conn), cases, strict=False)]
            if not b:
                return
            yield b

    def body(r: SuiteResult) -> None:
        checker = h.checker(r, send, lambda b: f"{b[0].name}..+{len(b)}", every=10)
        checker.run(batches())
        r.sent *= per_conn  # one connection carried per_conn inputs
    return h.run("mutation SIP/TCP", body)


def suite_rtp(h: Harness) -> SuiteResult:
    n = n_for(h, 3000, 100_000)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the fuzz source: the call's own RTP socket
    call = h.place_call(rx)
    other_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other_rx.bind(("127.0.0.1", 0))
    other_rx.setblocking(False)

    def body(r: SuiteResult) -> None:
        if call is None:
            r.add("harness", "rtp/setup", "could not place a call to fuzz RTP on")
            return
        ok, port = call
        rnd = random.Random(f"{h.seed}-rtp")

        def cases() -> Iterator[tuple[str, bytes, int]]:
            for name, data, kind in rtpcases.advisory_datagrams():
                yield name, data, port + (kind == "rtcp")
            for i in range(n):
                seed = rnd.choice(rtpcases.seeds(i))
                data = seed if rnd.random() < 0.1 else (rtpcases.random_datagram(rnd) if rnd.random() < 0.05
                                                         else mutate(seed, rnd, 1500))
                yield f"rtp-mut/seed={h.seed}/#{i}", data, port + (data[1:2] in (b"\xc8", b"\xc9", b"\xca", b"\xcb", b"\xcc", b"\xcf"))

        def send(c: tuple[str, bytes, int]) -> None:
            try:
                rx.sendto(c[1], ("127.0.0.1", c[2]))  # from the address the SDP named: latched
            except OSError:
                pass
            return None

        h.checker(r, send, lambda c: c[0], every=100).run(cases())
        # RTPbleed (CVE-2017-14099): RTP from another source must not steal the media
        for i in range(60):
            other_rx.sendto(rtpcases.rtp(5000 + i, 160 * i, ssrc=0xBAD), ("127.0.0.1", port))
            time.sleep(0.002)
        time.sleep(0.3)
        drain(other_rx)
        time.sleep(0.3)
        stolen = drain(other_rx)
        r.sent += 60
        if stolen:
            r.wrong += 1
            r.add("wrong", "CVE-2017-14099/rtpbleed", f"{stolen} RTP packets went to a source that only sent RTP")
        before = drain(rx)
        time.sleep(0.2)
        if before and drain(rx) == 0 and h.sut.alive():
            r.add("wrong", "rtp/call-still-sending", f"the fuzzed call stopped sending RTP (had {before} queued)")
            r.wrong += 1
        h.hang_up(ok)

    try:
        return h.run("RTP/RTCP on a live call", body)
    finally:
        rx.close()
        tx.close()
        other_rx.close()


def drain(s: socket.socket) -> int:
    n = 0
    while True:
        try:
            s.recv(65535)
            n += 1
        except OSError:
            return n


__all__ = ["Harness", "rand_tag", "suite_mut_sdp", "suite_mut_tcp", "suite_mut_udp", "suite_protos", "suite_rtp",
           "suite_torture"]
