"""Adversarial inputs for every parser of untrusted input, and a timer (shared by
tests/unit/test_parser_adversarial.py and bench/parser_worst_case.py).

The inputs are built to make super-linear work show: long runs of each character class the
grammars care about (token characters, whitespace, quotes, backslashes, brackets, separators),
alternations of them (``a a a …`` is what made the old name-addr regex split a token run in
exponentially many ways), nested brackets, many separators, a character that fails the match at
the very end, NUL bytes, and sizes up to 64 KB.  Each parser gets them in the places it reads
them (a display name, a URI, a parameter list, a header value, an SDP line …).
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from mediasrv.api.bandwidth import BandwidthError, parse_bxml
from mediasrv.api.errors import BodyError, parse_json_object
from mediasrv.calls.controller import CallCore, CallSettings
from mediasrv.calls.registry import CallRegistry, NullMedia
from mediasrv.content import decode
from mediasrv.content.source import SourceError
from mediasrv.media.dtmf import TelephoneEventDetector
from mediasrv.ops.logsafe import clip
from mediasrv.rtp.packet import RtpError, parse_rtcp
from mediasrv.rtp.packet import parse as parse_rtp
from mediasrv.sip import core as sipcore
from mediasrv.sip import digest, sdp
from mediasrv.sip import message as sipmsg
from mediasrv.sip.guard import MessageBudget, SourceLog
from mediasrv.sip.info import InfoError, parse_info
from mediasrv.sip.transaction import Dest
from mediasrv.sip.transport import SipTransport, TcpConnection

SIZE = 64 * 1024
PEER = Dest("udp", ("127.0.0.1", 5062))

# Runs of one character class, and alternations that give a backtracking matcher choices.
UNITS = [
    "a", "1", "-", ".", "~", " ", "\t", '"', "\\", "<", ">", ";", ",", "=", ":", "@", "[", "]",
    "%", "?", "&", "/", "\x00", "\x7f", "\u00e9",
    "a ", "a\t", " a", "a;", ";a", "a=", "a=b;", ";a=b", "a,", ",a", "a:", "a@", '"a"', '\\"', '"\\',
    "<a>", "<a", "a>", "a<", "<>", "[a]", "[::", "%4", "a\x00", "a\r\n ", " \r\n", "=\"", '";',
    "sip:", "<sip:a@b>", "<sip:a@b>,", ";tag=", "SIP/2.0/UDP h;", "a b=",
]
# What follows a run: nothing, or a character that makes the whole thing fail at the very end.
TAILS = ["", "\x00", '"', "<", "\x7f", "\\", " <sip:u@h>", "@", "=", "]"]


def runs(size: int, units: list[str] = UNITS, tails: list[str] = TAILS) -> Iterator[tuple[str, str]]:
    """(label, text) for every unit repeated to about *size* characters, with each tail."""
    for unit in units:
        body = unit * max(1, size // len(unit))
        for tail in tails:
            yield f"{unit!r}*{len(body) // len(unit)}+{tail!r}", body + tail
    yield "nested <", "<" * size + ">" * 10
    yield "nested <…>", "<" * (size // 2) + ">" * (size // 2)
    yield "nested [", "[" * size
    yield "nested quotes", '"\\"' * (size // 3)
    yield "NUL inside a token run", "a" * (size // 2) + "\x00" + "a" * (size // 2) + " <sip:user@host>"


@dataclass
class Case:
    """One input for one parser: ``fn(arg)`` is what is timed; errors it may raise are caught in it."""

    parser: str
    label: str
    fn: Callable[[Any], object]
    arg: Any

    @property
    def size(self) -> int:
        return len(self.arg) if isinstance(self.arg, str | bytes) else 0

    def run(self) -> object:
        return self.fn(self.arg)


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """The fastest of *repeat* runs, in seconds (the minimum resists noise from other load).

    The cyclic GC is off while timing, as ``timeit`` does: a collection walks the whole test
    process's heap (pytest, hypothesis, every module), a cost of the process, not the parser;
    the server itself freezes its long-lived heap out of the GC (gcpolicy.py).
    """
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
    finally:
        if enabled:
            gc.enable()
    return best


def _quiet(fn: Callable[..., object], *errors: type[BaseException]) -> Callable[..., object]:
    """Call *fn*; the errors a parser is allowed to raise on bad input are expected outcomes."""
    def wrapper(*args: object) -> object:
        try:
            return fn(*args)
        except errors:
            return None
    return wrapper


# ---------------------------------------------------------------------------------------------
# SIP


def invite(
    *,
    from_: str = "sipp <sip:sipp@127.0.0.1:5062>;tag=ft1",
    contact: str = "<sip:sipp@127.0.0.1:5062>",
    via: str = "SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-1;rport",
    to: str = "<sip:svc@127.0.0.1:5060>",
    ruri: str = "sip:svc@127.0.0.1:5060",
    extra: str = "",
    cseq: str = "1 INVITE",
    call_id: str = "c1@peer",
    body: bytes = b"",
) -> bytes:
    head = (
        f"INVITE {ruri} SIP/2.0\r\nVia: {via}\r\nFrom: {from_}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: {cseq}\r\nContact: {contact}\r\nMax-Forwards: 70\r\n{extra}"
        f"{'Content-Type: application/sdp' + chr(13) + chr(10) if body else ''}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("utf-8", "surrogateescape") + body


def nul_display_invite(where: str = "from", total: int = 523) -> bytes:
    """The reported 523-byte INVITE: a display name that is a token run with a NUL inside
    (``aaaa…a\\x00aaaa…a <sip:user@host>``) in From or in Contact."""

    def build(n1: int, n2: int) -> bytes:
        name = "a" * n1 + "\x00" + "a" * n2 + " <sip:user@host>"
        if where == "from":
            return invite(from_=name + ";tag=1", contact="<sip:caller@example.com>")
        return invite(from_="<sip:caller@example.com>;tag=1", contact=name)

    room = total - len(build(0, 0))
    return build(room // 2, room - room // 2)


def _sip_parse(data: bytes) -> object:
    try:
        m = sipmsg.parse(data)
    except sipmsg.ParseError:
        return None
    try:
        return m.contacts(), m.get_all("route"), m.get_all("record-route")
    except sipmsg.ParseError:
        return None


def _core_receive(data: bytes) -> None:
    core = CallCore(CallSettings(), CallRegistry(), NullMedia(), lambda d, dest: None, lambda: 100.0)
    core.receive(data, PEER)


async def _tcp_feed_async(data: bytes, piece: int) -> None:
    stats: dict[str, int] = {}
    transport = SipTransport(lambda d, dest: None, lambda: None, lambda d, dest, exc: None,
                             MessageBudget(stats, 0.005, SourceLog(sipcore.log)))
    conn = TcpConnection(transport, 1)
    for i in range(0, len(data), piece):
        conn.data_received(data[i:i + piece])
        while conn.paused:  # MAX_BATCH messages per loop turn: let it go on
            await asyncio.sleep(0)
        if conn.closed:
            break


_loop: asyncio.AbstractEventLoop | None = None


def _tcp_feed(data: bytes, *, piece: int) -> None:
    """Feed a stream to a TcpConnection in reads of *piece* bytes, on an event loop (it yields
    to the loop between batches of messages)."""
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
        atexit.register(_loop.close)
    _loop.run_until_complete(_tcp_feed_async(data, piece))


def _name_addr(s: str) -> object:
    return _quiet(sipmsg.parse_name_addr, sipmsg.ParseError)(s)


def _uri(s: str) -> object:
    return _quiet(sipmsg.parse_uri, sipmsg.ParseError)(s)


def _params(s: str) -> object:
    return _quiet(sipmsg.parse_params, sipmsg.ParseError)(s)


def _via(s: str) -> object:
    return _quiet(sipmsg.parse_via_list, sipmsg.ParseError)(s)


def _framing(b: bytes) -> object:
    return _quiet(sipmsg.framing_length, sipmsg.ParseError)(b)


def _rport(s: str) -> str:
    return sipcore._RPORT_RE.sub(";rport=1", s, count=1)


def _stateless(b: bytes) -> object:
    return sipcore.stateless_error(b, 400, "x", PEER, "ua")


def sip_cases(size: int = SIZE) -> Iterator[Case]:
    """Every SIP text parser, fed each run in the places it reads it."""
    line = sipmsg.MAX_LINE - 64  # the longest header field a message may carry
    for label, text in runs(size):
        yield Case("sip.parse_name_addr", f"display {label}", _name_addr, text + " <sip:a@b>")
        yield Case("sip.parse_name_addr", f"raw {label}", _name_addr, text)
        yield Case("sip.parse_name_addr", f"quoted {label}", _name_addr, '"' + text + '" <sip:a@b>')
        yield Case("sip.parse_name_addr", f"params {label}", _name_addr, "<sip:a@b>;" + text)
        yield Case("sip.parse_uri", label, _uri, "sip:" + text[: sipmsg.MAX_URI])
        yield Case("sip.parse_uri", f"uncapped {label}", _uri, "sip:" + text)
        yield Case("sip.parse_params", label, _params, ";" + text)
        yield Case("sip.parse_via_list", label, _via, "SIP/2.0/UDP " + text)
        yield Case("sip.split_header_list", label, sipmsg.split_header_list, text + ",")
        yield Case("sip.rport_rewrite", label, _rport, "SIP/2.0/UDP h" + text)
        short = text[:line]
        for where, msg in (
            ("From", invite(from_=short + " <sip:a@b>;tag=1")),
            ("Contact", invite(contact=short + " <sip:a@b>")),
            ("Via", invite(via="SIP/2.0/UDP h;" + short)),
            ("To", invite(to="<sip:a@b>;" + short)),
            ("CSeq", invite(cseq="1 " + short)),
            ("Request-URI", invite(ruri="sip:" + short[: sipmsg.MAX_URI - 8])),
            ("unknown header", invite(extra=f"X-A: {short}\r\n")),
            ("folded", invite(extra=f"X-A: a{short}\r\n {short}\r\n")),
            ("whole message", invite(extra=text)),
        ):
            yield Case("sip.parse", f"{where}: {label}", _sip_parse, msg)
            if where in ("From", "Contact", "Via", "whole message"):
                yield Case("sip.core.receive", f"{where}: {label}", _core_receive, msg)
        raw = f"INVITE sip:a@b SIP/2.0\r\nVia: {text}\r\nf: {text}\r\nt: x\r\ni: x\r\nCSeq: 1\r\n\r\n"
        yield Case("sip.stateless_error", label, _stateless, raw.encode("utf-8", "surrogateescape"))
        cl = f"Content-Length: {text}\r\nl:{text}"
        yield Case("sip.framing_length", label, _framing, cl.encode("utf-8", "surrogateescape"))
    # structure at the limits: many headers, many folded lines, many Vias, a long list
    many = "".join(f"X-{i}: v\r\n" for i in range(sipmsg.MAX_HEADERS - 10))
    yield Case("sip.parse", "MAX_HEADERS header fields", _sip_parse, invite(extra=many))
    folds = "X-F: a" + "\r\n b" * 8000 + "\r\n"
    yield Case("sip.parse", "8,000 continuation lines", _sip_parse, invite(extra=folds))
    vias = "Via: " + ",".join(f"SIP/2.0/UDP h{i};branch=z9hG4bK{i}" for i in range(250)) + "\r\n"
    yield Case("sip.parse", "250 Vias in one field", _sip_parse, invite(extra=vias))
    contacts = "Contact: " + ",".join(f'"n{i}" <sip:u{i}@h>;q=0.{i % 9}' for i in range(300)) + "\r\n"
    yield Case("sip.parse", "300 Contacts", _sip_parse, invite(extra=contacts))
    for where in ("from", "contact"):
        msg = nul_display_invite(where)
        yield Case("sip.parse", f"523-byte NUL display name in {where}", _sip_parse, msg)
        yield Case("sip.core.receive", f"523-byte NUL display name in {where}", _core_receive, msg)
    # TCP stream framing: whole, in small pieces, a header that never ends, a flood of CRLFs
    stream_inputs = {
        "64 KB of valid messages": invite() * (SIZE // len(invite())),
        "header that never ends": b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * SIZE,
        "CRLF flood": b"\r\n" * (SIZE // 2),
        "LF flood": b"\n" * SIZE,
        "CR flood": b"\r" * SIZE,
        "huge Content-Length": invite().replace(b"Content-Length: 0", b"Content-Length: 999999999") + b"x" * SIZE,
        "slow body": invite(body=b"v=0\r\n" * 6000),
    }
    for label, data in stream_inputs.items():
        for piece in (len(data), 1024, 64):
            yield Case("sip.tcp_framing", f"{label} in {piece}-byte reads", partial(_tcp_feed, piece=piece), data)


# ---------------------------------------------------------------------------------------------
# SDP, digest


def _sdp(body: bytes) -> object:
    try:
        offer = sdp.parse_sdp(body)
        return sdp.negotiate_offer(offer, ("PCMU", "PCMA"))
    except (sdp.SdpError, sdp.NoCommonCodec):
        return None


SDP_HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def sdp_cases(size: int = SIZE) -> Iterator[Case]:
    """64 KB bodies are refused by size at once; the work is in bodies and lines at the limits."""
    line = sdp.MAX_SDP_LINE - 24
    for label, text in runs(size):
        for where, body in (
            ("m= line", SDP_HEAD + "m=audio 4000 RTP/AVP " + text[:line]),
            ("a= line", SDP_HEAD + "m=audio 4000 RTP/AVP 0\r\na=" + text[:line]),
            ("c= line", SDP_HEAD + "m=audio 4000 RTP/AVP 0\r\nc=IN IP4 " + text[:line]),
            ("whole body", text[: sdp.MAX_SDP_BYTES]),
            ("64 KB body", text),
            ("many lines", SDP_HEAD + ("a=" + text[:40] + "\r\n") * (sdp.MAX_LINES - 8)),
        ):
            yield Case("sdp.parse_sdp+negotiate", f"{where}: {label}", _sdp, body.encode("utf-8", "surrogateescape"))
    fmts = " ".join(str(i % 128) for i in range(1000))
    rtpmaps = "".join(f"a=rtpmap:{i} telephone-event/8000\r\na=fmtp:{i} 0-16\r\n" for i in range(96, 128))
    many = (SDP_HEAD + f"m=audio 4000 RTP/AVP {fmts}\r\n" + rtpmaps * 7).encode()
    yield Case("sdp.parse_sdp+negotiate", "1,000 formats and 448 attributes", _sdp, many)
    lines = (SDP_HEAD + "m=audio 4000 RTP/AVP 0\r\n" + "a=x\r\n" * (sdp.MAX_LINES - 8)).encode()
    yield Case("sdp.parse_sdp+negotiate", "MAX_LINES lines", _sdp, lines)


def _challenge(value: str) -> object:
    return _quiet(digest.parse_challenge, digest.DigestError)(value)


def digest_cases(size: int = SIZE) -> Iterator[Case]:
    for label, text in runs(size):
        for where, value in (
            ("after scheme", "Digest " + text),
            ("quoted realm", 'Digest realm="' + text),
            ("param value", "Digest realm=" + text + ", nonce=x"),
            ("param names", "Digest " + text + "=1"),
        ):
            yield Case("digest.parse_challenge", f"{where}: {label}", _challenge, value)


# ---------------------------------------------------------------------------------------------
# RTP / RTCP


def _rtp(data: bytes) -> object:
    return _quiet(parse_rtp, RtpError)(data)


def _rtcp(data: bytes) -> object:
    return _quiet(parse_rtcp, RtpError)(data)


def rtp_cases(size: int = SIZE) -> Iterator[Case]:
    inputs = {
        "zeros": bytes(size),
        "0xff": b"\xff" * size,
        "all CSRCs + extension": bytes([0x9F, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]) + b"\xbe\xde\xff\xff" + bytes(size),
        "padding larger than packet": bytes([0xA0, 0, 0, 1]) + bytes(8) + b"\xff",
        "truncated extension": bytes([0x90, 0, 0, 1]) + bytes(8) + b"\xbe",
    }
    for label, data in inputs.items():
        yield Case("rtp.parse", label, _rtp, data)
    rtcp = {
        "zero-length packets": b"\x80\xc9\x00\x00" * (2048 // 4),
        "SDES chunks of empty items": b"\x9f\xca\x01\xff" + (b"\x00\x00\x00\x01" + b"\x01\x00" * 2) * 200,
        "RTPFB with all bits set": b"\x81\xcd\x01\xff" + bytes(8) + b"\xff\xff\xff\xff" * 500,
        "SR claiming 31 reports": b"\x9f\xc8\x00\x06" + bytes(24),
        "length past the end": b"\x80\xc8\xff\xff" + bytes(100),
        "64 KB (longer than a leg reads)": b"\x80\xc9\x00\x00" * (size // 4),
        "garbage": b"\x00\xff" * (size // 2),
    }
    for label, data in rtcp.items():
        yield Case("rtp.parse_rtcp", label, _rtcp, data)


def _telephone_events(data: bytes) -> object:
    """A stream of telephone-event packets (RFC 4733) cut from *data*, into one detector."""
    det = TelephoneEventDetector()
    out = []
    for i, at in enumerate(range(0, len(data), 64)):
        out += det.feed(i * 160, data[at:at + 64], i * 0.001)
    out += det.feed(0, data, 1.0)  # and the whole of it as one packet
    return out


def _info(body: bytes) -> object:
    out = []
    for ctype in ("application/dtmf-relay", "application/dtmf"):
        out.append(_quiet(parse_info, InfoError)(ctype, body))
    return out


def dtmf_cases(size: int = SIZE) -> Iterator[Case]:
    packets = {
        "zeros": bytes(size),
        "0xff": b"\xff" * size,
        "ends of every key": bytes(b for k in range(16) for b in (k, 0x80, 0, 160)) * (size // 64),
        "huge durations": b"\x05\x00\xff\xff" * (size // 4),
        "new event each packet": bytes(b for k in range(size // 4) for b in (k % 16, 0, 0, 80)),
        "odd length": b"\x01\x02\x03" * (size // 3),
    }
    for label, data in packets.items():
        yield Case("rtp.telephone_event", label, _telephone_events, data)
    for label, text in runs(size, tails=["", "\x00"]):
        for where, body in (("Signal= line", "Signal=" + text), ("lines", "\n" + text), ("Duration", "Signal=5\nDuration=" + text)):
            yield Case("sip.info_dtmf", f"{where}: {label}", _info, body.encode("utf-8", "surrogateescape"))


# ---------------------------------------------------------------------------------------------
# HTTP bodies: JSON and BXML


def _json(data: bytes) -> object:
    return _quiet(parse_json_object, BodyError)(data)


def _bxml(data: bytes) -> object:
    return _quiet(parse_bxml, BandwidthError)(data, "Bxml")


def json_cases(size: int = SIZE) -> Iterator[Case]:
    inputs = {
        "nested arrays": b"[" * size,
        "nested objects": b'{"a":' * (size // 5),
        "nested, closed": b'{"a":' + b"[" * (size // 2 - 10) + b"]" * (size // 2 - 10) + b"}",
        "long integer": b'{"a":' + b"1" * size + b"}",
        "long string": b'{"a":"' + b"\\u0041" * (size // 6) + b'"}',
        "many keys": b"{" + b",".join(b'"k%d":1' % i for i in range(size // 10)) + b"}",
        "long array": b'{"a":[' + b"1," * (size // 2 - 5) + b"1]}",
        "unterminated string": b'{"a":"' + b"\\\\" * (size // 2),
        "NUL": b'{"a":"\x00' * (size // 7),
        "whitespace": b" " * size + b"{}",
    }
    for label, data in inputs.items():
        yield Case("api.parse_json_object", label, _json, data)


def bxml_cases(size: int = SIZE) -> Iterator[Case]:
    play = b"<PlayAudio>http://example.com/a.wav</PlayAudio>"
    inputs = {
        "nested elements": b"<Bxml>" + b"<a>" * (size // 8) + b"</a>" * (size // 8) + b"</Bxml>",
        "unclosed nesting": b"<Bxml>" + b"<a>" * (size // 3),
        "many verbs": b"<Bxml>" + play * ((size - 20) // len(play)) + b"</Bxml>",
        "many attributes": b"<Bxml><Pause " + b" ".join(b'a%d="1"' % i for i in range(size // 10)) + b"/></Bxml>",
        "long text": b"<Bxml><PlayAudio>" + b"a" * size + b"</PlayAudio></Bxml>",
        "entity (refused)": b'<!DOCTYPE x [<!ENTITY a "' + b"a" * 1000 + b'">]><Bxml>&a;&a;&a;</Bxml>',
        "over the size cap": b"<Bxml>" + b" " * (size + 10) + b"</Bxml>",
        "NUL": b"<Bxml>\x00" + b"\x00" * size,
        "CDATA": b"<Bxml><![CDATA[" + b"]" * size + b"]]></Bxml>",
        "comment": b"<Bxml><!--" + b"-" * size + b"--></Bxml>",
    }
    for label, data in inputs.items():
        yield Case("api.parse_bxml", label, _bxml, data)


# ---------------------------------------------------------------------------------------------
# Audio file headers and framing


def _chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


FMT = _chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16))
MP3_FRAME = b"\xff\xfb\x90\x64" + b"\x00" * 413  # MPEG-1 layer III 128 kb/s 44.1 kHz: 417 bytes


def _wav_header_walk(data: bytes) -> object:
    try:
        parser = decode._WavParser()
        out = parser.feed(data)
        parser.finish()
        return out
    except SourceError:
        return None


def _mp3_frames(data: bytes) -> object:
    try:
        framer = decode._Mp3Framer()
        out = framer.feed(data, final=True)
        framer.finish()
        return out
    except SourceError:
        return None


def _describe(data: bytes) -> object:
    return _quiet(decode.describe_audio, SourceError)(data, False)


def audio_cases(size: int = SIZE) -> Iterator[Case]:
    riff = b"RIFF\xff\xff\xff\xffWAVE"
    wav = {
        "many empty chunks": riff + _chunk(b"LIST", b"") * (size // 8) + FMT + _chunk(b"data", b"\x00\x00" * 8),
        "many fmt chunks": riff + FMT * (size // len(FMT)),
        "chunk claiming 4 GB": riff + FMT + b"junk\xff\xff\xff\xff" + bytes(size),
        "data before fmt": riff + _chunk(b"data", bytes(size)),
        "unknown-length data": riff + FMT + b"data\xff\xff\xff\xff" + bytes(size),
        "zeros": bytes(size),
    }
    for label, data in wav.items():
        yield Case("decode.wav", label, _wav_header_walk, data)
        yield Case("decode.sniff", f"wav {label}", decode.sniff, data)
        yield Case("decode.describe_audio(decode=False)", f"wav {label}", _describe, data)
    id3_empty = b"ID3\x03\x00\x00\x00\x00\x00\x00"
    mp3 = {
        "valid frames": MP3_FRAME * (size // len(MP3_FRAME)),
        "sync bytes": b"\xff" * size,
        "headers that never confirm": (b"\xff\xfb\x90\x64" + b"\x00" * 3) * (size // 7),
        "a header every other byte": b"\xff\xfb" * (size // 2),
        "empty ID3 tags": id3_empty * (size // 10),
        "nested ID3 claims": (b"ID3\x04\x00\x10\x00\x00\x00\x00") * (size // 10),
        "APE tags": (b"APETAGEX" + bytes(24)) * (size // 32),
        "ID3v1 trailers": MP3_FRAME * 2 + b"TAG" * (size // 3),
        "junk then frames": bytes(size - 3 * len(MP3_FRAME)) + MP3_FRAME * 3,
        "free-format and reserved": (b"\xff\xfb\x00\x00\xff\xfb\xf0\x00\xff\xfb\x9c\x00") * (size // 12),
    }
    for label, data in mp3.items():
        yield Case("decode.mp3_framing", label, _mp3_frames, data)
        yield Case("decode.sniff", f"mp3 {label}", decode.sniff, data)
        yield Case("decode.describe_audio(decode=False)", f"mp3 {label}", _describe, data)
    text = {
        "HTML": b"<html>" + b"a" * size,
        "JSON": json.dumps(["a"] * (size // 6)).encode(),
        "invalid UTF-8": b"\xc3" * size,
    }
    for label, data in text.items():
        yield Case("decode.sniff", label, decode.sniff, data)


def log_cases(size: int = SIZE) -> Iterator[Case]:
    for label, text in runs(size, units=["a", "\x00", "\\", "\u202e", "\r\n"], tails=[""]):
        yield Case("logsafe.clip", label, clip, text)


def all_cases(size: int = SIZE) -> Iterator[Case]:
    for gen in (sip_cases, sdp_cases, digest_cases, rtp_cases, dtmf_cases, json_cases, bxml_cases, audio_cases,
                log_cases):
        yield from gen(size)
