"""SDP (RFC 4566) parsing and the offer/answer rules of RFC 3264 for one audio stream.

The codecs are :class:`mediacodecs.codec.Codec` objects; which payload type number means which
codec is decided by ``mediacodecs.registry`` (static numbers, rtpmaps, dynamic numbers for our
offers).  Configured codecs are names; they are turned into objects once, at the top of each
function here, and negotiation yields the object and the payload type number chosen.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from mediacodecs import registry
from mediacodecs.codec import CODECS, Codec
from mediacodecs.registry import PayloadType

from ..calls.registry import NegotiatedMedia
from ..ops.logsafe import clip

__all__ = [
    "SdpError",
    "NoCommonCodec",
    "Sdp",
    "MediaDesc",
    "parse_sdp",
    "negotiate_offer",
    "build_answer",
    "build_offer",
    "media_from_answer",
]

PTIMES = registry.PTIMES
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_REVERSE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
MAX_LINES = 512  # an SDP with more lines than this is not a phone call's
MAX_MEDIA = 32
# C0 controls other than HT, and DEL: never in SDP text (RFC 4566 5: no NUL, CR or LF in a value)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
HOLD_ADDRS = ("0.0.0.0", "::")  # RFC 2543 hold: a c= that names no destination

# Bounds on what parse_sdp reads besides MAX_LINES (the SIP body is capped at 32 KiB in
# message.py).  Real offers' lines stay under 200 characters (ICE candidates, fingerprints).
MAX_SDP_BYTES = 32768
MAX_SDP_LINE = 8192  # as a SIP header field (message.MAX_LINE)


class SdpError(ValueError):
    """The body is not SDP we can use (answered with 488 and a Warning naming the reason)."""


class NoCommonCodec(ValueError):
    """Well-formed SDP without an audio stream we can do (answered with 488)."""


@dataclass(slots=True)
class MediaDesc:
    media: str
    port: int
    proto: str
    fmts: list[str]
    conn: tuple[str, str] | None = None  # (addrtype, address)
    attrs: list[tuple[str, str | None]] = field(default_factory=list)

    def attr(self, name: str) -> str | None:
        for k, v in self.attrs:
            if k == name:
                return v if v is not None else ""
        return None

    def direction(self) -> str | None:
        for k, _ in self.attrs:
            if k in DIRECTIONS:
                return k
        return None


@dataclass(slots=True)
class Sdp:
    origin: list[str]
    conn: tuple[str, str] | None
    attrs: list[tuple[str, str | None]]
    media: list[MediaDesc]

    def direction(self) -> str | None:
        for k, _ in self.attrs:
            if k in DIRECTIONS:
                return k
        return None


def _digits(text: str, most: int) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts "²"), at most *most* of them."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


def _conn(value: str) -> tuple[str, str]:
    """``IN IP4 <addr>`` / ``IN IP6 <addr>``: the address must be an IP literal of that family.

    Host names are refused, never resolved: a lookup would be made on the peer's behalf, on the
    event loop, for a name it chose (resolution is not implemented; see the README).
    """
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line {clip(value, 60)!r}")
    addr = parts[2].split("/")[0]
    if not addr:
        raise SdpError("empty connection address")
    if "%" in addr or not addr.isascii():
        raise SdpError(f"connection address {addr[:60]!r} is not an IP literal")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise SdpError(f"connection address {addr[:60]!r} is not an IP literal (host names are not resolved)") from None
    if ip.version != (4 if parts[1] == "IP4" else 6):
        raise SdpError(f"connection address {addr[:60]!r} is not {parts[1]}")
    return parts[1], ip.compressed if ip.version == 6 else addr


def parse_sdp(body: bytes) -> Sdp:
    """Parse an SDP body; raise SdpError for anything we cannot trust.  Linear in the body, and the
    body, its line count and each line's length are bounded (MAX_SDP_*)."""
    if len(body) > MAX_SDP_BYTES:
        raise SdpError(f"SDP larger than {MAX_SDP_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SdpError("SDP is not UTF-8") from exc
    text = text.replace("\r\n", "\n")
    bad = _CONTROL_RE.search(text.rstrip("\n").replace("\n", " "))
    if bad is not None:
        raise SdpError(f"control character {bad.group()!r} in SDP")
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if len(lines) > MAX_LINES:
        raise SdpError(f"more than {MAX_LINES} SDP lines")
    if any(len(ln) > MAX_SDP_LINE for ln in lines):
        raise SdpError(f"SDP line longer than {MAX_SDP_LINE} characters")
    if not lines or lines[0].strip() != "v=0":
        raise SdpError("SDP must start with v=0")
    origin: list[str] | None = None
    conn = None
    attrs: list[tuple[str, str | None]] = []
    media: list[MediaDesc] = []
    cur: MediaDesc | None = None
    for ln in lines[1:]:
        if len(ln) < 2 or ln[1] != "=" or not ln[0].isalpha():
            raise SdpError(f"bad SDP line {clip(ln, 40)!r}")
        t, v = ln[0], ln[2:].strip()
        if t == "m":
            parts = v.split()
            if len(parts) < 4:
                raise SdpError(f"bad m= line {clip(v, 60)!r}")
            port_s = parts[1].split("/")[0]
            if not _digits(port_s, 5) or int(port_s) > 65535:  # 0: a rejected / disabled stream
                raise SdpError(f"bad m= port {parts[1][:20]!r} (must be 0-65535)")
            if len(media) >= MAX_MEDIA:
                raise SdpError(f"more than {MAX_MEDIA} m= lines")
            cur = MediaDesc(parts[0], int(port_s), parts[2], parts[3:])
            media.append(cur)
        elif t == "c":
            c = _conn(v)
            if cur is None:
                conn = c
            else:
                cur.conn = c
        elif t == "a":
            name, sep, val = v.partition(":")
            (cur.attrs if cur is not None else attrs).append((name.strip(), val.strip() if sep else None))
        elif t == "o" and cur is None:
            origin = v.split()
            if len(origin) != 6:
                raise SdpError("bad o= line")
    if origin is None:
        raise SdpError("missing o= line")
    return Sdp(origin, conn, attrs, media)


def _rtpmaps(m: MediaDesc) -> dict[int, tuple[str, int]]:
    maps: dict[int, tuple[str, int]] = {}
    for k, v in m.attrs:
        if k == "rtpmap" and v:
            pt_s, _, enc = v.partition(" ")
            if _digits(pt_s, 3):
                name, _, rate = enc.strip().partition("/")
                rate_n = rate.split("/")[0]
                maps[int(pt_s)] = (name.upper(), int(rate_n) if _digits(rate_n, 6) else 0)
    return maps


@dataclass(slots=True)
class OfferPlan:
    """What we decided about an offer; enough to build the answer and the NegotiatedMedia."""

    index: int  # which m-line carries the call's audio
    codecs: list[PayloadType]  # supported, in the order of the answer (see _prefer)
    te: tuple[int, str | None] | None  # (pt, fmtp) for telephone-event at the chosen codec's clock rate
    ptime: int
    direction: str  # the peer's direction
    media: NegotiatedMedia


def _configured(codecs: tuple[str, ...]) -> list[Codec]:
    """The configured codec names as objects, in preference order (names we do not speak are skipped)."""
    return list(dict.fromkeys(CODECS[c.upper()] for c in codecs if c.upper() in CODECS))


def _prefer(chosen: list[PayloadType], wanted: list[Codec]) -> list[PayloadType]:
    """Wideband codecs we support go first when offered (in our *codecs* order); the narrowband
    ones keep the offer's order (RFC 3264: the offerer's preference among equals)."""
    wide = sorted((p for p in chosen if p.codec.wideband), key=lambda p: wanted.index(p.codec))
    return wide + [p for p in chosen if not p.codec.wideband]


def negotiate_offer(offer: Sdp, codecs: tuple[str, ...]) -> OfferPlan:
    """Pick the first audio m-line with a codec from *codecs* (wideband first when offered, see _prefer)."""
    wanted = _configured(codecs)
    offered: list[str] = []
    for i, m in enumerate(offer.media):
        if m.media != "audio" or m.port == 0 or m.proto.upper() not in ("RTP/AVP", "RTP/AVPF"):
            continue
        maps = _rtpmaps(m)
        chosen: list[PayloadType] = []
        tes: dict[int, tuple[int, str | None]] = {}  # clock rate -> the first telephone-event (pt, fmtp) at it
        for f in m.fmts:
            if not _digits(f, 3):
                continue
            pt = int(f)
            codec = registry.codec_for(pt, maps.get(pt))
            if codec is not None and codec in wanted and all(p.codec is not codec for p in chosen):
                chosen.append(PayloadType(codec, pt))
            elif pt in maps and maps[pt][0] == registry.TELEPHONE_EVENT and maps[pt][1] not in tes:
                fmtp = None
                for k, v in m.attrs:
                    if k == "fmtp" and v and v.split(" ", 1)[0] == f:
                        fmtp = v.split(" ", 1)[1].strip() if " " in v else ""
                tes[maps[pt][1]] = (pt, fmtp)
        if not chosen:
            offered.extend(m.fmts[:8])
            continue
        chosen = _prefer(chosen, wanted)
        te = tes.get(chosen[0].codec.clock_rate)
        ptime_s = m.attr("ptime")
        ptime = int(ptime_s) if ptime_s and _digits(ptime_s, 3) and int(ptime_s) in PTIMES else registry.DEFAULT_PTIME_MS
        direction = m.direction() or offer.direction() or "sendrecv"
        conn = m.conn or offer.conn
        if conn is None:
            raise SdpError("no c= line for the audio stream")
        media = _negotiated(conn, m.port, chosen[0], ptime, te[0] if te else None, direction)
        return OfferPlan(i, chosen, te, ptime, direction, media)
    if not offered:
        raise NoCommonCodec("no usable audio stream (RTP/AVP audio with a port other than 0)")
    raise NoCommonCodec(f"no common audio codec (offered payload types {' '.join(offered)[:40]}; "
                        f"supported: {', '.join(sorted(c.name for c in wanted))})")


def _negotiated(
    conn: tuple[str, str], port: int, codec: PayloadType, ptime: int, te_pt: int | None, peer_dir: str
) -> NegotiatedMedia:
    addr = conn[1]
    hold_addr = addr in HOLD_ADDRS
    send = peer_dir in ("sendrecv", "recvonly") and not hold_addr
    recv = peer_dir in ("sendrecv", "sendonly")
    return NegotiatedMedia(
        remote_addr=None if hold_addr else (addr, port),
        codec=codec.codec,
        payload_type=codec.pt,
        ptime_ms=ptime,
        telephone_event_pt=te_pt,
        send_enabled=send,
        recv_enabled=recv,
    )


def _addrtype(host: str) -> str:
    return "IP6" if ":" in host else "IP4"


def _session_lines(local: tuple[str, int], sess_id: int, version: int) -> list[str]:
    host = local[0]
    at = _addrtype(host)
    return [
        "v=0",
        f"o=mediasrv {sess_id} {version} IN {at} {host}",
        "s=mediasrv",
        f"c=IN {at} {host}",
        "t=0 0",
    ]


def build_answer(offer: Sdp, plan: OfferPlan, local: tuple[str, int], sess_id: int, version: int) -> bytes:
    """Answer: one line per offered m-line; unused ones rejected with port 0 (RFC 3264 6)."""
    lines = _session_lines(local, sess_id, version)
    for i, m in enumerate(offer.media):
        if i != plan.index:
            lines.append(f"m={m.media} 0 {m.proto} {' '.join(m.fmts) or '0'}")
            continue
        pts = [p.pt for p in plan.codecs] + ([plan.te[0]] if plan.te else [])
        lines.append(f"m=audio {local[1]} {m.proto} {' '.join(map(str, pts))}")
        for p in plan.codecs:
            lines.append(f"a=rtpmap:{p.rtpmap()}")
        if plan.te:
            lines.append(f"a=rtpmap:{plan.te[0]} telephone-event/{plan.media.clock_rate}")
            if plan.te[1] is not None:
                lines.append(f"a=fmtp:{plan.te[0]} {plan.te[1]}")
        lines.append(f"a=ptime:{plan.ptime}")
        lines.append(f"a={_REVERSE.get(plan.direction, 'sendrecv')}")
    return ("\r\n".join(lines) + "\r\n").encode()


def build_offer(local: tuple[str, int], codecs: tuple[str, ...], sess_id: int, version: int) -> bytes:
    """Our offer: the configured codecs in preference order (dynamic numbers from 96 for codecs without
    a static one), telephone-event (0-16) at each of their clock rates (101 for the first), ptime 20."""
    lines = _session_lines(local, sess_id, version)
    types = registry.offer_types(_configured(codecs))
    tes = registry.telephone_event_types((p.clock_rate for p in types), (p.pt for p in types))
    pts = [p.pt for p in types] + list(tes.values())
    lines.append(f"m=audio {local[1]} RTP/AVP {' '.join(map(str, pts))}")
    lines += [f"a=rtpmap:{p.rtpmap()}" for p in types]
    for rate, te_pt in tes.items():
        lines += [f"a=rtpmap:{te_pt} telephone-event/{rate}", f"a=fmtp:{te_pt} 0-16"]
    lines += [f"a=ptime:{registry.DEFAULT_PTIME_MS}", "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode()


def media_from_answer(answer: Sdp, codecs: tuple[str, ...]) -> NegotiatedMedia:
    """NegotiatedMedia from the peer's answer to our offer (first accepted audio stream)."""
    plan = negotiate_offer(answer, codecs)
    return plan.media
