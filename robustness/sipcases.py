"""SIP inputs: the RFC 4475/5118 torture messages, a PROTOS c07-sip-style generator, and
reproducers written from published advisories. Each is a :class:`SipCase`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .sipmsg import Msg, Targets, rand_tag, sdp

TORTURE_DIRS = [Path(__file__).resolve().parents[1] / "tests" / "data" / "sip-torture", Path("/work/shared/sip-torture")]


@dataclass
class SipCase:
    name: str
    data: bytes
    transport: str = "udp"  # udp | tcp | tcp-reset
    expect: str = "any"  # any | accept (never 400) | reject (never 2xx)
    call_id: str | None = None  # to match responses (None: any response counts)
    complete: bool = True  # ACK + BYE a 2xx, as a well-behaved caller would
    repeat: int = 1


# -- RFC 4475 / RFC 5118 -----------------------------------------------------------------
def _call_id_of(data: bytes) -> str | None:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\n"):
        k, sep, v = line.partition(b":")
        if sep and k.strip().lower() in (b"call-id", b"i"):
            return v.strip().decode("latin-1")
    return None


def torture_cases() -> list[SipCase]:
    """Every torture message over UDP and TCP, with the verdict from cases.json."""
    root = next((d for d in TORTURE_DIRS if (d / "rfc5118" / "cases.json").exists()), None)
    if root is None:
        raise FileNotFoundError("no sip-torture data (tests/data/sip-torture)")
    out: list[SipCase] = []
    rfc4475 = root / "rfc4475" / "cases.json"
    if not rfc4475.exists():
        rfc4475 = Path("/work/shared/sip-torture/rfc4475/cases.json")
    entries: list[tuple[str, Path, str]] = []
    if rfc4475.exists():
        for c in json.loads(rfc4475.read_text()):
            entries.append((f"rfc4475/{c['name']}", rfc4475.parent / c["file"], c["verdict"]))
    for c in json.loads((root / "rfc5118" / "cases.json").read_text()):
        entries.append((f"rfc5118/{c['name']}", root / "rfc5118" / c["wire_file"], c["verdict"]))
    for name, path, verdict in entries:
        data = path.read_bytes()
        expect = {"accept": "accept", "reject": "reject"}.get(verdict, "any")
        # over TCP the top Via says TCP, so the answer comes back on the connection (RFC 3261 18.2.2)
        tcp_data = re.sub(rb"SIP/2\.0/UDP", b"SIP/2.0/TCP", data, count=1, flags=re.I)
        # and its own transaction: the UDP copy's branch/Call-ID would make it a retransmission
        tcp_data = re.sub(rb"(branch\s*=\s*)([^\s;,]+)", rb"\1\2tcp", tcp_data, count=1, flags=re.I)
        tcp_data = re.sub(rb"(?m)^((?:call-id|i)[ \t]*:[ \t]*)([^\r\n]+)", rb"\1tcp.\2", tcp_data, count=1, flags=re.I)
        for transport, raw in (("udp5060", data), ("tcp", tcp_data)):
            out.append(SipCase(f"{name}/{transport}", raw, transport, expect, _call_id_of(raw)))
    return out


# -- PROTOS c07-sip style ----------------------------------------------------------------
# Test-case classes from the published description of PROTOS c07-sip: every field of an INVITE
# (request line, Via, From, To, Call-ID, CSeq, Contact, Expires, Max-Forwards, Content-Type,
# Content-Length, SDP lines) replaced with overflows of many lengths, format strings, control
# and high-bit bytes, integer boundaries; plus missing and duplicated headers.
OVERFLOW_LENGTHS = (2, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 60000)
OVERFLOW_CHARS = ("a", ":", "@", "<", ">", "%", '"', " ", ";", ",", "=", "[")
FORMAT_STRINGS = ("%s%s%s%s%s%s%s%s%s%s", "%n%n%n%n%n%n%n%n", "%x" * 64, "%.1024d", "%s%p%x%d", "%99999999999s")
CONTROL = ("\x00", "\r", "\n", "\r\n", "\r\n\r\n", "\t", "\x7f", "\x1b[2J", "\xff\xfe", "\x80" * 32,
           "a\x00a", "\x00" * 512, "\xc0\xaf", "a" * 256 + "\x00" + "a" * 256, "a" * 4096 + "\x00", "\x00" + "a" * 4096)
INTEGERS = ("-1", "0", "1", "-0", "00000000000000000001", "2147483647", "2147483648", "4294967295",
            "4294967296", "18446744073709551616", "9" * 100, "0x10", "1e9", " 1", "", "-2147483649", "+1")
VERSIONS = ("SIP/2.1", "SIP/1.0", "SIP/20", "SIP/2.0x", "sip/2.0", "HTTP/1.1", "SIP/", "SIP", "", "SIP/2.0" * 100,
            "SIP/9999999999.0")

SLOTS = [
    # name, kind (str|int|ver), valid value, expect when anomalous
    ("method", "str", "INVITE", "any"),
    ("ruri_user", "str", "service", "any"),
    ("ruri_host", "str", "127.0.0.1", "any"),
    ("version", "ver", "SIP/2.0", "reject"),
    ("via_version", "ver", "SIP/2.0", "any"),
    ("via_host", "str", "127.0.0.1", "any"),
    ("via_port", "int", "{src_port}", "any"),
    ("via_branch", "str", "z9hG4bK{rand}", "any"),
    ("from_dn", "str", '"Robust"', "any"),
    ("from_user", "str", "robust", "any"),
    ("from_tag", "str", "{rand}", "any"),
    ("to_dn", "str", "Service", "any"),
    ("to_user", "str", "service", "any"),
    ("callid_val", "str", "{rand}", "any"),
    ("callid_host", "str", "127.0.0.1", "any"),
    ("cseq_int", "int", "1", "any"),
    ("cseq_method", "str", "INVITE", "any"),
    ("contact_dn", "str", '"Robust"', "any"),
    ("contact_user", "str", "robust", "any"),
    ("contact_host", "str", "{stray}", "any"),
    ("contact_port", "int", "{stray_sip}", "any"),
    ("expires", "int", "60", "any"),
    ("maxfwd", "int", "70", "any"),
    ("ctype", "str", "application/sdp", "any"),
    ("clen", "int", "{clen}", "any"),
    ("sdp_v", "int", "0", "any"),
    ("o_user", "str", "fuzz", "any"),
    ("o_sess", "int", "1", "any"),
    ("o_net", "str", "IN", "any"),
    ("o_ip", "str", "{stray}", "any"),
    ("sdp_s", "str", "-", "any"),
    ("c_net", "str", "IN", "reject"),
    ("c_ip", "str", "{stray}", "reject"),
    ("t_start", "int", "0", "any"),
    ("t_stop", "int", "0", "any"),
    ("m_media", "str", "audio", "any"),
    ("m_port", "int", "{stray_rtp}", "any"),
    ("m_proto", "str", "RTP/AVP", "any"),
    ("m_fmt", "int", "0", "any"),
    ("rtpmap_enc", "str", "PCMU/8000", "any"),
    ("a_attr", "str", "sendrecv", "any"),
]

TEMPLATE_HEAD = (
    "{method} sip:{ruri_user}@{ruri_host}:{sip_port} {version}\r\n"
    "Via: {via_version}/UDP {via_host}:{via_port};rport;branch={via_branch}\r\n"
    "Max-Forwards: {maxfwd}\r\n"
    "From: {from_dn} <sip:{from_user}@127.0.0.1>;tag={from_tag}\r\n"
    "To: {to_dn} <sip:{to_user}@127.0.0.1:{sip_port}>\r\n"
    "Call-ID: {callid_val}@{callid_host}\r\n"
    "CSeq: {cseq_int} {cseq_method}\r\n"
    "Contact: {contact_dn} <sip:{contact_user}@{contact_host}:{contact_port}>\r\n"
    "Expires: {expires}\r\n"
    "User-Agent: robustness-protos\r\n"
    "Content-Type: {ctype}\r\n"
    "Content-Length: {clen}\r\n\r\n"
)
TEMPLATE_SDP = (
    "v={sdp_v}\r\n"
    "o={o_user} {o_sess} 1 {o_net} IP4 {o_ip}\r\n"
    "s={sdp_s}\r\n"
    "c={c_net} IP4 {c_ip}\r\n"
    "t={t_start} {t_stop}\r\n"
    "m={m_media} {m_port} {m_proto} {m_fmt}\r\n"
    "a=rtpmap:0 {rtpmap_enc}\r\n"
    "a={a_attr}\r\n"
)
HEADERS = ("Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact", "Content-Type", "Content-Length")
REQUIRED = {"Via", "From", "To", "Call-ID", "CSeq"}


def _anomalies(kind: str) -> Iterator[tuple[str, str]]:
    if kind == "ver":
        for v in VERSIONS:
            yield f"version:{v[:12]!r}", v
    for n in OVERFLOW_LENGTHS:
        for ch in OVERFLOW_CHARS:
            yield f"overflow:{ch!r}x{n}", ch * n
    for f in FORMAT_STRINGS:
        yield f"format:{f[:10]!r}", f
    for c in CONTROL:
        yield f"control:{c[:8]!r}{'…' if len(c) > 8 else ''}/{len(c)}", c
    if kind == "int":
        for i in INTEGERS:
            yield f"integer:{i[:14]!r}", i


def render_protos(values: dict[str, str]) -> bytes:
    body = TEMPLATE_SDP.format(**values)
    v = dict(values)
    if v.get("clen") == "{clen}":
        v["clen"] = str(len(body.encode("latin-1", errors="replace")))
    head = TEMPLATE_HEAD.format(**v)
    return (head + body).encode("latin-1", errors="replace")


def protos_cases(t: Targets, src: tuple[str, int], max_udp: int = 65000) -> Iterator[SipCase]:
    """Thousands of single-field anomalies of one INVITE (+ missing/duplicated headers)."""
    def base(i: int) -> dict[str, str]:
        call = rand_tag(16)
        return {
            "method": "INVITE", "ruri_user": "service", "ruri_host": "127.0.0.1", "sip_port": str(t.sip_port),
            "version": "SIP/2.0", "via_version": "SIP/2.0", "via_host": src[0], "via_port": str(src[1]),
            "via_branch": "z9hG4bK" + rand_tag(), "from_dn": '"Robust"', "from_user": "robust",
            "from_tag": rand_tag(), "to_dn": "Service", "to_user": "service", "callid_val": call,
            "callid_host": "127.0.0.1", "cseq_int": "1", "cseq_method": "INVITE", "contact_dn": '"Robust"',
            "contact_user": "robust", "contact_host": t.stray(i), "contact_port": str(t.stray_sip),
            "expires": "60", "maxfwd": "70", "ctype": "application/sdp", "clen": "{clen}", "sdp_v": "0",
            "o_user": "fuzz", "o_sess": "1", "o_net": "IN", "o_ip": t.stray(i), "sdp_s": "-", "c_net": "IN",
            "c_ip": t.stray(i), "t_start": "0", "t_stop": "0", "m_media": "audio", "m_port": str(t.stray_rtp),
            "m_proto": "RTP/AVP", "m_fmt": "0", "rtpmap_enc": "PCMU/8000", "a_attr": "sendrecv",
        }

    i = 0
    for slot, kind, _valid, expect in SLOTS:
        for label, value in _anomalies(kind):
            i += 1
            v = base(i)
            v[slot] = value
            data = render_protos(v)
            transport = "udp" if len(data) <= max_udp else "tcp"
            call_id = None if slot in ("callid_val", "callid_host") else f"{v['callid_val']}@127.0.0.1"
            exp = expect
            if slot == "cseq_int" and label.startswith(("overflow", "format", "control")):
                exp = "reject"
            if slot == "m_port" and not value.isdigit():
                exp = "reject"
            yield SipCase(f"protos/{slot}/{label}", data, transport, exp, call_id)
    # missing and duplicated headers
    for h in HEADERS:
        for op in ("missing", "duplicated"):
            i += 1
            v = base(i)
            lines = render_protos(v).split(b"\r\n")
            idx = next(k for k, ln in enumerate(lines) if ln.lower().startswith(h.lower().encode() + b":"))
            if op == "missing":
                del lines[idx]
            else:
                lines.insert(idx, lines[idx].replace(b"robust", b"robust2").replace(b"z9hG4bK", b"z9hG4bKdup"))
            exp = "reject" if op == "missing" and h in REQUIRED else "any"
            if op == "duplicated" and h in ("CSeq", "Call-ID", "From", "To", "Content-Length", "Max-Forwards"):
                exp = "reject"
            yield SipCase(f"protos/header/{h}/{op}", b"\r\n".join(lines), "udp", exp, f"{v['callid_val']}@127.0.0.1")
    # Content-Length lies
    for label, clen in (("short", "10"), ("long", "100000"), ("huge", "4294967296"), ("negative", "-5"), ("text", "abc")):
        i += 1
        v = base(i)
        v["clen"] = clen
        yield SipCase(f"protos/content-length/{label}", render_protos(v), "udp", "reject" if label != "short" else "any",
                      f"{v['callid_val']}@127.0.0.1")


def invite(t: Targets, src: tuple[str, int], i: int, transport: str = "UDP", *, display: str = '"Robust"',
           contact: str | None = None, cseq: str = "1", body: str | None = None, user_agent: str = "robustness",
           extra: list[tuple[str, str]] | None = None, method: str = "INVITE") -> Msg:
    stray = t.stray(i)
    headers = [
        ("Via", f"SIP/2.0/{transport} {src[0]}:{src[1]};rport;branch=z9hG4bK{rand_tag()}"),
        ("Max-Forwards", "70"),
        ("From", f"{display} <sip:robust@{src[0]}>;tag={rand_tag()}"),
        ("To", f"<sip:service@127.0.0.1:{t.sip_port}>"),
        ("Call-ID", f"{rand_tag(16)}@127.0.0.1"),
        ("CSeq", f"{cseq} {method}"),
        ("Contact", contact or f"<sip:robust@{stray}:{t.stray_sip};transport={transport.lower()}>"),
        ("User-Agent", user_agent),
        *(extra or []),
    ]
    if body is None:
        body = sdp(stray, t.stray_rtp) if method == "INVITE" else ""
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return Msg(method, f"sip:service@127.0.0.1:{t.sip_port}", headers, body)


def call_id(m: Msg) -> str:
    return next(v for k, v in m.headers if k == "Call-ID")
