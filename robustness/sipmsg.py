"""SIP messages the suites start from, a tiny SIP peer (UDP/TCP), and the addresses inputs may name."""

from __future__ import annotations

import random
import re
import socket
import time
from dataclasses import dataclass, field

STRAY_NET = "127.77.0."  # inputs name 127.77.0.1-20 in Contact/Via/Record-Route/SDP; listeners count arrivals
STRAY_HOSTS = [f"{STRAY_NET}{i}" for i in range(1, 21)]


@dataclass(frozen=True)
class Targets:
    """Where the server listens and which ports the inputs' foreign addresses use."""

    sip_port: int
    stray_sip: int  # port on 127.77.0.x named in Contact/Via/Record-Route
    stray_rtp: int  # port on 127.77.0.x named in SDP m= (RTCP is +1)

    def stray(self, i: int = 0) -> str:
        return STRAY_HOSTS[i % len(STRAY_HOSTS)]


def rand_tag(n: int = 10) -> str:
    return "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=n))


def sdp(addr: str, port: int, extra: str = "", session: str = "-") -> str:
    return (
        "v=0\r\n"
        f"o=fuzz 1 1 IN IP4 {addr}\r\n"
        f"s={session}\r\n"
        f"c=IN IP4 {addr}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8 101\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=sendrecv\r\n" + extra
    )


@dataclass
class Msg:
    """A request as a header list, so generators can replace, drop or duplicate any one field."""

    method: str
    uri: str
    headers: list[tuple[str, str]]
    body: str = ""
    version: str = "SIP/2.0"
    content_length: str | None = None  # None: computed

    def render(self) -> bytes:
        body = self.body.encode("latin-1", errors="replace")
        lines = [f"{self.method} {self.uri} {self.version}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if self.content_length is not None:
            if self.content_length != "<absent>":
                lines.append(f"Content-Length: {self.content_length}")
        else:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace") + body

    def copy(self) -> Msg:
        return Msg(self.method, self.uri, list(self.headers), self.body, self.version, self.content_length)


def request(method: str, t: Targets, src: tuple[str, int], transport: str = "UDP", i: int = 0,
            with_sdp: bool | None = None, rtp: tuple[str, int] | None = None, user_agent: str = "robustness") -> Msg:
    """A valid request from *src* whose Contact/Record-Route/SDP name stray address *i*."""
    call_id = f"{rand_tag(16)}@{src[0]}"
    stray = t.stray(i)
    cseq = 1 if method != "BYE" else 2
    headers = [
        ("Via", f"SIP/2.0/{transport} {src[0]}:{src[1]};rport;branch=z9hG4bK{rand_tag()}"),
        ("Max-Forwards", "70"),
        ("From", f'"Robust" <sip:robust@{src[0]}>;tag={rand_tag()}'),
        ("To", f"<sip:service@127.0.0.1:{t.sip_port}>" + (f";tag={rand_tag()}" if method == "BYE" else "")),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", f"<sip:robust@{stray}:{t.stray_sip};transport={transport.lower()}>"),
        ("Record-Route", f"<sip:{stray}:{t.stray_sip};lr>"),
        ("User-Agent", user_agent),
    ]
    body = ""
    if with_sdp if with_sdp is not None else method == "INVITE":
        addr, port = rtp or (stray, t.stray_rtp)
        headers.append(("Content-Type", "application/sdp"))
        body = sdp(addr, port)
    if method == "REGISTER":
        headers.append(("Expires", "60"))
    uri = f"sip:service@127.0.0.1:{t.sip_port}" if method != "REGISTER" else f"sip:127.0.0.1:{t.sip_port}"
    return Msg(method, uri, headers, body)


# -- reading responses -----------------------------------------------------------
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3})")


def status_of(data: bytes) -> int | None:
    m = _STATUS.match(data)
    return int(m.group(1)) if m else None


def header(data: bytes, *names: str) -> str | None:
    text = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in text.split("\r\n")[1:]:
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() in names:
            return v.strip()
    return None


def sdp_port(data: bytes) -> int | None:
    m = re.search(rb"\r?\nm=audio (\d+)", data)
    return int(m.group(1)) if m else None


def ack_and_bye(resp: bytes, t: Targets, src: tuple[str, int], transport: str = "UDP") -> list[bytes]:
    """For a 2xx to our INVITE: the ACK and the BYE a well-behaved caller sends (CSeq n, n+1)."""
    call_id, frm, to, cseq = (header(resp, *n) for n in (("call-id", "i"), ("from", "f"), ("to", "t"), ("cseq",)))
    if not (call_id and frm and to and cseq):
        return []
    try:
        n = int(cseq.split()[0])
    except (ValueError, IndexError):
        return []
    out = []
    for method, num in (("ACK", n), ("BYE", n + 1)):
        lines = [
            f"{method} sip:service@127.0.0.1:{t.sip_port} SIP/2.0",
            f"Via: SIP/2.0/{transport} {src[0]}:{src[1]};rport;branch=z9hG4bK{rand_tag()}",
            "Max-Forwards: 70", f"From: {frm}", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {num} {method}",
            "Content-Length: 0",
        ]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace"))
    return out


@dataclass
class UdpPeer:
    """One UDP socket on loopback: send to the server, collect what comes back."""

    server: tuple[str, int]
    host: str = "127.0.0.1"
    port: int = 0
    sock: socket.socket = field(init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind((self.host, self.port))
        except OSError:
            self.sock.close()
            raise
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)

    @property
    def addr(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self.server)
        except OSError:
            pass

    def recv_all(self, wait: float = 0.0) -> list[bytes]:
        """Everything queued, waiting up to *wait* s for the first datagram."""
        out: list[bytes] = []
        end = time.monotonic() + wait
        while True:
            self.sock.settimeout(max(0.0, end - time.monotonic()) if not out else 0.0)
            try:
                out.append(self.sock.recv(65535))
            except (TimeoutError, BlockingIOError, OSError):
                if out or time.monotonic() >= end:
                    return out

    def final(self, wait: float) -> tuple[int | None, list[bytes]]:
        """Wait up to *wait* s for a final (non-1xx) response; returns its status and all received."""
        got: list[bytes] = []
        end = time.monotonic() + wait
        while time.monotonic() < end:
            self.sock.settimeout(max(0.001, end - time.monotonic()))
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, OSError):
                break
            got.append(data)
            st = status_of(data)
            if st is not None and st >= 200:
                return st, got
        return None, got

    def close(self) -> None:
        self.sock.close()


def tcp_exchange(server: tuple[str, int], data: bytes, wait: float, reset: bool = False,
                 src_host: str = "127.0.0.1") -> tuple[int | None, list[bytes], tuple[str, int]]:
    """Send *data* on a new TCP connection; read until a final response or *wait*; RST if *reset*."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src_host, 0))
    got: list[bytes] = []
    final: int | None = None
    try:
        s.settimeout(2)
        s.connect(server)
        addr = s.getsockname()
        s.sendall(data)
        if not reset:
            buf = b""
            end = time.monotonic() + wait
            while time.monotonic() < end and final is None:
                s.settimeout(max(0.001, end - time.monotonic()))
                try:
                    chunk = s.recv(65535)
                except (TimeoutError, OSError):
                    break
                if not chunk:
                    break
                buf += chunk
                for part in re.split(rb"(?=SIP/2\.0 \d{3} )", buf):
                    st = status_of(part)
                    if st is not None:
                        got.append(part)
                        if st >= 200:
                            final = st
        return final, got, addr
    except OSError:
        return None, got, ("127.0.0.1", 0)
    finally:
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()


def options(t: Targets, src: tuple[str, int], transport: str = "UDP") -> bytes:
    return request("OPTIONS", t, src, transport).render()
