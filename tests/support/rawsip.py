"""A SIP UAC written by hand on one UDP socket, and the hostile SDP offers it sends."""

from __future__ import annotations

import asyncio
import socket
import uuid

SDP = ("v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\n{c}t=0 0\r\nm=audio {port} RTP/AVP {pts}\r\n"
       "a=rtpmap:0 PCMU/8000\r\n")


def offer(c: str = "c=IN IP4 127.0.0.1\r\n", port: str = "{rtp}", pts: str = "0") -> str:
    return SDP.format(c=c, port=port, pts=pts)


# class -> (SDP template, expected final status); {rtp} is replaced by a port the test owns
CLASSES: dict[str, tuple[str, int]] = {
    "control": (offer(), 200),
    "nul_in_c": (offer(c="c=IN IP4 127.0.0.1\x00AAAAAAAA\r\n"), 488),
    "port_65535": (offer(port="65535"), 200),
    "port_0": (offer(port="0"), 488),
    "port_70000": (offer(port="70000"), 488),
    "hostname_in_c": (offer(c="c=IN IP4 media.attacker.example\r\n"), 488),
    "multicast_c": (offer(c="c=IN IP4 239.1.2.3\r\n"), 488),
    "metadata_c": (offer(c="c=IN IP4 169.254.169.254\r\n"), 488),
    "denied_cidr": (offer(c="c=IN IP4 127.0.0.2\r\n"), 488),  # the server runs with media_deny_cidrs 127.0.0.2/32
    "ip6_in_ip4": (offer(c="c=IN IP4 ::1\r\n"), 488),
    "missing_c": (offer(c=""), 488),
    "bad_codecs": (offer(pts="18 97 abc \u00b2 99999999999"), 488),
}


class RawSip:
    """A SIP UAC by hand on one UDP socket: what an attacker (or SIPVicious) sends."""

    def __init__(self, sip_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.server = ("127.0.0.1", sip_port)

    def close(self) -> None:
        self.sock.close()

    def _headers(self, method: str, call_id: str, branch: str, cseq: int, to_tag: str | None) -> str:
        to = "<sip:svc@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        return (f"{method} sip:svc@127.0.0.1:{self.server[1]} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
                f"From: <sip:x@127.0.0.1>;tag=ft\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:x@127.0.0.1:{self.port}>\r\nMax-Forwards: 70\r\n")

    def send(self, method: str, call_id: str, branch: str, cseq: int = 1, to_tag: str | None = None,
             body: str = "") -> None:
        head = self._headers(method, call_id, branch, cseq, to_tag)
        ctype = "Content-Type: application/sdp\r\n" if body else ""
        data = f"{head}{ctype}Content-Length: {len(body.encode())}\r\n\r\n{body}".encode()
        self.sock.sendto(data, self.server)

    async def final(self, call_id: str, cseq_method: str, timeout: float = 5.0) -> tuple[int, str, str]:
        """(status, To tag, whole text) of the first final response for *call_id* / *cseq_method*."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no final response to {cseq_method} {call_id}")
            data, _ = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65535), left)
            text = data.decode("utf-8", "replace")
            head = text.split("\r\n\r\n", 1)[0]
            if f"Call-ID: {call_id}\r\n" not in head + "\r\n" or not text.startswith("SIP/2.0 "):
                continue  # a retransmission or a BYE from the server for an earlier call
            status = int(text.split(" ", 2)[1])
            cseq = next(ln for ln in head.split("\r\n") if ln.lower().startswith("cseq:"))
            if status < 200 or not cseq.endswith(cseq_method):
                continue
            to = next(ln for ln in head.split("\r\n") if ln.lower().startswith("to:"))
            tag = to.split(";tag=", 1)[1].split(";")[0] if ";tag=" in to else ""
            return status, tag, text

    async def call(self, body: str) -> tuple[int, str]:
        """INVITE; a final non-2xx is ACKed; a 2xx is ACKed and hung up with BYE. (status, response text)."""
        call_id = uuid.uuid4().hex
        branch = "z9hG4bK" + uuid.uuid4().hex[:12]
        self.send("INVITE", call_id, branch, body=body)
        status, tag, text = await self.final(call_id, "INVITE")
        if status >= 300:
            self.send("ACK", call_id, branch, to_tag=tag)
            return status, text
        self.send("ACK", call_id, "z9hG4bK" + uuid.uuid4().hex[:12], to_tag=tag)
        self.send("BYE", call_id, "z9hG4bK" + uuid.uuid4().hex[:12], cseq=2, to_tag=tag)
        bye, _, _ = await self.final(call_id, "BYE")
        assert bye == 200
        return status, text
