"""Test helper (no tests here): a SipCore on a fake clock with a list for a network, no sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from mediasrv.calls.controller import CallCore as SipCore
from mediasrv.calls.controller import CallSettings as CoreSettings
from mediasrv.calls.registry import Call, CallRegistry, NullMedia
from mediasrv.sip.message import ParseError, Request, Response, parse
from mediasrv.sip.transaction import Dest

PEER = ("127.0.0.1", 5062)
UDP = Dest("udp", PEER)

SDP_OFFER = (
    "v=0\r\no=peer 1 {v} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP {pts}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n{extra}"
)


def sdp(pts: str = "0 8", ip: str = "127.0.0.1", extra: str = "", v: int = 1) -> str:
    return SDP_OFFER.format(pts=pts, ip=ip, extra=extra, v=v)


class RecordingMedia(NullMedia):
    """NullMedia that remembers what signaling told it (a real backend, not a mock)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.changes: list[tuple[str, bool | None]] = []
        self.released: list[str] = []

    def allocate(self, call: Call) -> tuple[str, int]:
        if self.fail:
            raise RuntimeError("no port")
        return super().allocate(call)

    def media_changed(self, call: Call) -> None:
        self.changes.append((call.call_id, call.media.send_enabled if call.media else None))

    def release(self, call: Call) -> None:
        self.released.append(call.call_id)
        super().release(call)


@dataclass
class Harness:
    settings: CoreSettings = field(default_factory=CoreSettings)
    fail_media: bool = False

    def __post_init__(self) -> None:
        self.now = 100.0
        self.sent: list[tuple[Request | Response, Dest, bytes, float]] = []
        self.registry = CallRegistry()
        self.events: list[tuple[str, str]] = []
        self.registry.subscribe(lambda ev, call: self.events.append((ev, call.call_id)))
        self.media = RecordingMedia(self.fail_media)
        self.core = SipCore(self.settings, self.registry, self.media, self._send, lambda: self.now)

    def _send(self, data: bytes, dest: Dest) -> None:
        try:
            msg = parse(data, stream=True)
        except ParseError:  # e.g. a 400 that echoes the bad CSeq it complains about
            msg = None
        self.sent.append((msg, dest, data, self.now))  # type: ignore[arg-type]

    def feed(self, text: str, dest: Dest = UDP) -> None:
        self.core.receive(text.replace("\n", "\r\n").replace("\r\r\n", "\r\n").encode(), dest)

    def feed_bytes(self, data: bytes, dest: Dest = UDP) -> None:
        self.core.receive(data, dest)

    def advance(self, seconds: float) -> None:
        """Move the fake clock, firing every timer in order at its own deadline."""
        target = self.now + seconds
        while True:
            d = self.core.timers.next_deadline()
            if d is None or d > target:
                break
            self.now = max(self.now, d)
            self.core.timers.run_due(self.now)
        self.now = target

    def take(self) -> list[Request | Response]:
        out = [m for m, *_ in self.sent]
        self.sent.clear()
        return out

    def statuses(self) -> list[int]:
        out = [int(d.split(b" ", 2)[1]) for _, _, d, _ in self.sent if d.startswith(b"SIP/2.0 ")]
        self.sent.clear()
        return out


def request(
    method: str = "INVITE",
    call_id: str = "c1@peer",
    branch: str = "z9hG4bK-1",
    cseq: int = 1,
    to_tag: str | None = None,
    body: str = "",
    extra: str = "",
    cseq_method: str | None = None,
    from_tag: str = "ft1",
) -> str:
    to = "<sip:svc@127.0.0.1:5060>" + (f";tag={to_tag}" if to_tag else "")
    ct = "Content-Type: application/sdp\n" if body else ""
    return (
        f"{method} sip:svc@127.0.0.1:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch={branch};rport\n"
        f"From: sipp <sip:sipp@127.0.0.1:5062>;tag={from_tag}\n"
        f"To: {to}\n"
        f"Call-ID: {call_id}\n"
        f"CSeq: {cseq} {cseq_method or method}\n"
        "Contact: <sip:sipp@127.0.0.1:5062>\n"
        "Max-Forwards: 70\n"
        f"{extra}{ct}Content-Length: {len(body.encode())}\n\n{body}"
    )


def response_to(req: Request, status: int, to_tag: str = "uas1", body: str = "", contact: str = "") -> str:
    lines = [f"SIP/2.0 {status} X"]
    lines += [f"Via: {v}" for k, v in req.headers if k == "via"]
    lines += [f"From: {req.get('from')}", f"To: {req.get('to')};tag={to_tag}", f"Call-ID: {req.call_id}"]
    lines += [f"CSeq: {req.cseq} {req.cseq_method}", "Contact: <sip:uas@127.0.0.1:5062;transport=UDP>" + contact]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return "\n".join(lines) + "\n\n" + body
