"""Reproducers written from published SIP advisories' descriptions (no exploit code was copied).

Each is named after the advisory (or the issue) whose input it stands for and returns a
"wrong response" description or None; the oracle (hang, crash, traceback, growth, stray sends)
runs after each one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .oracle import SuiteResult
from .sipcases import call_id, invite
from .sipmsg import Msg, UdpPeer, ack_and_bye, header, rand_tag, sdp, status_of, tcp_exchange
from .sipsuites import Harness


@dataclass
class Advisory:
    name: str
    what: str
    run: Callable[[Harness], str | None]


def _exchange(h: Harness, m: Msg, wait: float = 1.0, complete: bool = True) -> tuple[int | None, list[bytes]]:
    h.peer.send(m.render())
    status, got = h.final(call_id(m), wait)
    if complete:
        h.complete(got)
    return status, got


def _refused(status: int | None) -> str | None:
    return f"answered {status}" if status is not None and 200 <= status < 300 else None


def long_display_nul(where: str) -> Callable[[Harness], str | None]:
    def run(h: Harness) -> str | None:
        name = "a" * 250 + "\x00" + "a" * 250
        if where == "From":
            m = invite(h.t, h.peer.addr, 2, display=name)
        else:
            m = invite(h.t, h.peer.addr, 2, contact=f"{name} <sip:robust@{h.t.stray(2)}:{h.t.stray_sip}>")
        t0 = time.monotonic()
        status, _ = _exchange(h, m, 2.5)
        took = time.monotonic() - t0
        return f"no answer for {took:.1f} s" if status is None and took > 2 else None
    return run


def huge_content_length(h: Harness) -> str | None:
    m = invite(h.t, h.peer.addr, 3)
    m.content_length = "4294967296"
    status, _ = _exchange(h, m)
    return _refused(status)


def cseq_top(h: Harness) -> str | None:
    """CSeq 2147483647 INVITE; the peer's BYE then needs 2^31. The call must still be endable."""
    rtp = UdpPeer(("127.0.0.1", 9))
    try:
        m = invite(h.t, h.peer.addr, 4, cseq="2147483647", body=sdp(*rtp.addr))
        h.peer.send(m.render())
        status, got = h.final(call_id(m), 2.0)
        ok = next((g for g in got if status_of(g) == 200 and header(g, "call-id", "i") == call_id(m)), None)
        if ok is None:
            return None  # refused outright: fine
        ack, bye = ack_and_bye(ok, h.t, h.peer.addr)
        h.peer.send(ack)
        h.peer.send(bye)
        bye_status = None
        end = time.monotonic() + 2.0
        while bye_status is None and time.monotonic() < end:  # the 200 to BYE, not a retransmitted 200 to INVITE
            for g in h.peer.recv_all(0.2):
                if "BYE" in (header(g, "cseq") or "").upper() and header(g, "call-id", "i") == call_id(m):
                    bye_status = status_of(g)
        up: list[dict] = []
        for _ in range(20):
            up = [c for c in (h.sut.get_json("/v1/calls") or {}).get("calls", [])
                  if c.get("sip_call_id") == call_id(m) and c.get("state") != "ended"]
            if not up:
                return None
            time.sleep(0.1)
        return f"BYE with CSeq 2147483648 answered {bye_status}; call still {up[0].get('state')}"
    finally:
        rtp.close()


def sdp_nul_in_c(h: Harness) -> str | None:
    body = sdp(h.t.stray(5), h.t.stray_rtp).replace(f"c=IN IP4 {h.t.stray(5)}", f"c=IN IP4 127.0.0.1\x00{'x' * 20}")
    status, _ = _exchange(h, invite(h.t, h.peer.addr, 5, body=body))
    return _refused(status)


def sdp_port_65535(h: Harness) -> str | None:
    _exchange(h, invite(h.t, h.peer.addr, 6, body=sdp(h.t.stray(6), 65535)))
    return None


def svmap(method: str) -> Callable[[Harness], str | None]:
    def run(h: Harness) -> str | None:
        m = invite(h.t, h.peer.addr, 7, user_agent="friendly-scanner", method=method)
        m.uri = "sip:100@127.0.0.1"
        status, _ = _exchange(h, m, 1.0, complete=False)
        return _refused(status) if method == "INVITE" else None
    return run


def register_flood(h: Harness) -> str | None:
    """CVE-2021-41145 (FreeSWITCH SIP flood memory exhaustion) shape: 3,000 REGISTERs unpaced, against
    a second server with the default per-source limits (the main one has them raised for the fuzzers)."""
    from .oracle import probe
    from .sipmsg import Targets, request
    from .sut import ServerUnderTest

    sut = ServerUnderTest(raise_sip_limits=False)
    sut.start()
    t = Targets(sut.sip_port, h.t.stray_sip, h.t.stray_rtp)
    flood = UdpPeer(("127.0.0.1", sut.sip_port), host="127.0.0.3")
    try:
        msgs = [request("REGISTER", t, flood.addr, i=i).render() for i in range(3000)]
        rss0 = sut.rss_kb()
        t0 = time.monotonic()
        for m in msgs:
            flood.send(m)
        flood.recv_all(0.1)
        took = probe(sut, t)
        tb = sut.tracebacks()
        grew = (sut.rss_kb() - rss0) // 1024
        if not sut.alive():
            return "the default-limits server died under the flood"
        if took is None:
            return f"health-check OPTIONS unanswered after the flood ({time.monotonic() - t0:.1f} s)"
        if tb:
            return f"{tb} tracebacks in the default-limits server's log"
        return f"RSS grew {grew} MB over 3,000 REGISTERs" if grew > 20 else None
    finally:
        flood.close()
        sut.stop()


def tcp_invite_reset(h: Harness) -> str | None:
    """AST-2018-005 (crash when many TCP connections are cancelled) shape: 20 TCP INVITEs, then RST."""
    for i in range(20):
        m = invite(h.t, h.peer.addr, 8 + i % 3, "TCP")
        tcp_exchange(h.server, m.render(), 0.05, reset=True)
    return None


def ack_after_bye(h: Harness) -> str | None:
    """CVE-2013-5641 (AST-2013-004): an ACK carrying SDP after the call was hung up."""
    rtp = UdpPeer(("127.0.0.1", 9))
    try:
        m = invite(h.t, h.peer.addr, 9, body=sdp(*rtp.addr))
        h.peer.send(m.render())
        _, got = h.final(call_id(m), 2.0)
        ok = next((g for g in got if status_of(g) == 200 and header(g, "call-id", "i") == call_id(m)), None)
        if ok is None:
            return None
        ack, bye = ack_and_bye(ok, h.t, h.peer.addr)
        h.peer.send(bye)
        h.final(call_id(m), 1.0)
        late = ack.replace(b"Content-Length: 0\r\n\r\n", b"")
        body = sdp(h.t.stray(9), h.t.stray_rtp).encode()
        h.peer.send(late + f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.2)
        return None
    finally:
        rtp.close()


def two_addresses(h: Harness) -> str | None:
    """CVE-2007-1561 (Asterisk): SDP with one valid and one invalid connection address."""
    body = sdp(h.t.stray(10), h.t.stray_rtp) + "c=IN IP4 999.1.2.3.4\r\n"
    status, _ = _exchange(h, invite(h.t, h.peer.addr, 10, body=body))
    return None if status != 200 else None


def media_no_formats(h: Harness) -> str | None:
    """CVE-2013-5642 (AST-2013-005): SDP media descriptions without usable formats."""
    body = (f"v=0\r\no=x 1 1 IN IP4 {h.t.stray(11)}\r\ns=-\r\nc=IN IP4 {h.t.stray(11)}\r\nt=0 0\r\n"
            f"m=audio {h.t.stray_rtp} RTP/AVP\r\nm=video 0 RTP/AVP 999999\r\nm=audio 1 RTP/AVP 101\r\n")
    status, _ = _exchange(h, invite(h.t, h.peer.addr, 11, body=body))
    return _refused(status)


def session_timer_low(h: Harness) -> str | None:
    """AST-2014-002 (fd exhaustion with failed session-timer negotiation): 20 INVITEs with Session-Expires: 1."""
    for _i in range(20):
        _exchange(h, invite(h.t, h.peer.addr, 12, extra=[("Supported", "timer"), ("Session-Expires", "1"),
                                                          ("Min-SE", "4294967296")]), 0.3)
    return None


def kamailio_branch(h: Harness) -> str | None:
    """CVE-2018-8828 (Kamailio): REGISTER with a malformed Via branch and From tag (off-by-one heap overflow)."""
    from .sipmsg import request
    m = request("REGISTER", h.t, h.peer.addr, i=13)
    m.headers = [(k, v.replace("branch=z9hG4bK", "branch=z9hG4bK" + "\x00" * 1 + ";" * 100) if k == "Via" else
                  (v + "tag=" if k == "From" else v)) for k, v in m.headers]
    _exchange(h, m, 0.5)
    return None


def multipart_zero_part(h: Harness) -> str | None:
    """CVE-2017-9359 (pjproject): a multipart body with a zero-length part."""
    body = "--b\r\n\r\n--b\r\nContent-Type: application/sdp\r\n\r\n--b--\r\n"
    m = invite(h.t, h.peer.addr, 14, body="")
    m.headers.append(("Content-Type", "multipart/mixed;boundary=b"))
    m.body = body
    status, _ = _exchange(h, m)
    return _refused(status)


def reinvite_decline(h: Harness) -> str | None:
    """CVE-2019-15297 (AST-2019-004): a re-INVITE whose offer is declined (m=image 0), in a live dialog."""
    rtp = UdpPeer(("127.0.0.1", 9))
    try:
        m = invite(h.t, h.peer.addr, 15, body=sdp(*rtp.addr))
        h.peer.send(m.render())
        _, got = h.final(call_id(m), 2.0)
        ok = next((g for g in got if status_of(g) == 200 and header(g, "call-id", "i") == call_id(m)), None)
        if ok is None:
            return None
        ack, bye = ack_and_bye(ok, h.t, h.peer.addr)
        h.peer.send(ack)
        to = header(ok, "to") or ""
        re_inv = invite(h.t, h.peer.addr, 15, cseq="2",
                        body="v=0\r\no=x 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=image 0 udptl t38\r\n")
        re_inv.headers = [(k, (to if k == "To" else header(ok, "from") if k == "From" else call_id(m) if k == "Call-ID" else v))
                          for k, v in re_inv.headers]
        h.peer.send(re_inv.render())
        h.final(call_id(m), 1.0)
        h.complete([])
        h.peer.send(bye)
        h.final(call_id(m), 1.0)
        return None
    finally:
        rtp.close()


def via_contact_stray(h: Harness) -> str | None:
    """Issue 15: a BYE/OPTIONS whose Via and Contact name a host the request did not come from."""
    m = invite(h.t, h.peer.addr, 16, method="OPTIONS")
    m.headers[0] = ("Via", f"SIP/2.0/UDP {h.t.stray(16)}:{h.t.stray_sip};branch=z9hG4bK{rand_tag()}")
    h.peer.send(m.render())
    time.sleep(0.2)
    return None


ADVISORIES: list[Advisory] = [
    Advisory("issue14/one-datagram-hang/From-display-NUL", "long token display name with a NUL", long_display_nul("From")),
    Advisory("issue14/one-datagram-hang/Contact-display-NUL", "same shape in Contact", long_display_nul("Contact")),
    Advisory("issue14/sdp-NUL-in-c", "c=IN IP4 127.0.0.1\\0...", sdp_nul_in_c),
    Advisory("issue15/sdp-m-audio-65535", "RTCP port 65536", sdp_port_65535),
    Advisory("issue15/CSeq-2147483647", "dialog at the top of the CSeq range", cseq_top),
    Advisory("PROTOS/content-length-4294967296", "huge Content-Length", huge_content_length),
    Advisory("SIPVicious-svmap/OPTIONS-friendly-scanner", "scanner probe", svmap("OPTIONS")),
    Advisory("SIPVicious-svmap/INVITE-friendly-scanner", "scanner INVITE must not get a call", svmap("INVITE")),
    Advisory("AST-2018-005/tcp-invite-reset-x20", "TCP INVITE then RST, 20 times", tcp_invite_reset),
    Advisory("CVE-2013-5641/AST-2013-004/ack-with-sdp-after-bye", "late ACK with SDP", ack_after_bye),
    Advisory("CVE-2007-1561/sdp-valid-and-invalid-address", "two c= lines", two_addresses),
    Advisory("CVE-2013-5642/AST-2013-005/media-without-formats", "m= without formats", media_no_formats),
    Advisory("AST-2014-002/session-timer-fd-exhaustion-x20", "Session-Expires: 1", session_timer_low),
    Advisory("CVE-2018-8828/kamailio-register-branch-tag", "malformed branch and From tag", kamailio_branch),
    Advisory("CVE-2017-9359/pjproject-multipart-zero-length-part", "multipart with an empty part", multipart_zero_part),
    Advisory("CVE-2019-15297/AST-2019-004/reinvite-declined-stream", "re-INVITE m=image 0", reinvite_decline),
    Advisory("issue15/via-contact-name-another-host", "responses must go to the source", via_contact_stray),
    Advisory("CVE-2021-41145/register-flood-3000", "REGISTER flood from one source", register_flood),
]


def suite_advisories(h: Harness) -> SuiteResult:
    def body(r: SuiteResult) -> None:
        h.checker(r, lambda a: a.run(h), lambda a: a.name).run(ADVISORIES)
    return h.run(f"advisory reproducers ({len(ADVISORIES)})", body, settle_s=2.0)
