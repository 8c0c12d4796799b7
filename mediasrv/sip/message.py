"""SIP message parsing and serialization (RFC 3261 section 7, 19, 20, 25), sans-I/O.

The parser is strict where the RFC 4475 torture tests say a message must be rejected and lenient
where they say it must be tolerated.  Only the headers every message needs (Via, From, To, Call-ID,
CSeq, Content-Length) are parsed eagerly; everything else stays a raw string until asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate, chain, compress, repeat
from operator import add, sub
from urllib.parse import unquote_to_bytes

from ..ops.logsafe import clip

__all__ = [
    "ParseError",
    "Uri",
    "NameAddr",
    "Via",
    "Request",
    "Response",
    "Message",
    "parse",
    "parse_uri",
    "parse_name_addr",
    "parse_via_list",
    "parse_params",
    "split_header_list",
    "canonical_name",
    "unescape",
    "header_end",
    "framing_length",
]

MAX_CSEQ = 2**32 - 1  # RFC 3261 says < 2**31; real stacks go up to 2**32-1, so a dialog at the top still ends

# What one message may hold.  RFC 4475's largest torture message (longreq) has 44 header lines,
# a 593-character line and 3.5 KB in all; real INVITEs with a large SDP stay well under 16 KB.
# Every parser below is linear, so these bound the work one message can cost, not its shape.
MAX_MESSAGE_BYTES = 65535  # a UDP datagram's maximum; over TCP the framed message (513)
MAX_HEADER_BYTES = 32768  # the header section (513)
MAX_HEADERS = 256  # header fields, after unfolding (400)
MAX_LINE = 8192  # one header field after unfolding, or the start line (400)
MAX_URI = 2048  # the Request-URI (414) or a URI in a header field (400)
MAX_BODY_BYTES = 32768  # the body (413)


class ParseError(ValueError):
    """A message that must not be processed.  ``status`` is what a UAS answers (400, 413, 414, 505
    or 513); ``reason`` quotes message text only through :func:`clip`, so it is short and safe to log."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

_DISPLAY = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

# Headers that may appear at most once; a second copy is a 400 (RFC 4475 3.3.x multi01).
SINGLE = frozenset({"call-id", "cseq", "from", "to", "max-forwards", "content-type", "content-length"})

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(_TOKEN)
_HEADER_NAME_RE = re.compile(_TOKEN + r"\Z")
_METHOD_RE = re.compile(_TOKEN + r"\Z")
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_STATUS_RE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9]) (.*)\Z", re.S)
_VERSION_RE = re.compile(r"SIP/(\d+)\.(\d+)\Z")
_CSEQ_RE = re.compile(r"\s*(\d{1,12})\s+(" + _TOKEN + r")\s*\Z")
_DIGITS_RE = re.compile(r"\s*(\d{1,12})\s*\Z")
_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_\-.]+)\Z")
_CL_RE = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)


def _show(text: str) -> str:
    """Message text quoted in a ParseError: clipped and escaped (it ends up in logs and reason phrases)."""
    return repr(clip(text, 60))


def canonical_name(lname: str) -> str:
    """Display form of a lower-case header name (``call-id`` -> ``Call-ID``)."""
    d = _DISPLAY.get(lname)
    if d is not None:
        return d
    return "-".join(p[:1].upper() + p[1:] for p in lname.split("-"))


def unescape(s: str) -> str:
    """Decode %HH escapes (only where the grammar allows them: URI user, params)."""
    if "%" not in s:
        return s
    return unquote_to_bytes(s).decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------
# URIs, name-addr, parameters


_PARAM_VALUE = r"[A-Za-z0-9\-.!%*_+`'~:]+"
# One parameter after its ';'.  Token, blanks and the value alternatives are disjoint character
# classes and every repetition is possessive, so no input makes these backtrack.
_PARAM = (
    r"\s*+(" + _TOKEN + r')\s*+(?:=\s*+("(?:[^"\\]++|\\.)*+"|\[[0-9A-Fa-f:.]++\]|' + _PARAM_VALUE + r"+))?+\s*+"
)
_PARAM_LIST_RE = re.compile(r"[ \t]*+(?:;" + _PARAM + r")*+[ \t]*+\Z", re.S)
_PARAM_ITEM_RE = re.compile(r";" + _PARAM, re.S)


def parse_params(s: str) -> dict[str, str | None]:
    """Parse ``;a=b;c`` (leading ';' included) into a dict with lower-case names.

    Validated by one linear full match and split by one scan, both in C: a list of 30,000
    parameters costs milliseconds, not a Python step per character.
    """
    if not _PARAM_LIST_RE.match(s):
        if s.lstrip(" \t")[:1] != ";":
            raise ParseError(f"bad parameter list {_show(s)}")
        raise ParseError(f"bad parameter in {_show(s)}")
    # a value is never empty, so findall's '' for a missing one means a flag (None)
    return {name.lower(): value or None for name, value in _PARAM_ITEM_RE.findall(s)}


@dataclass(slots=True)
class Uri:
    """A SIP/SIPS URI split into parts; other schemes keep their opaque text in ``opaque``."""

    scheme: str
    user: str | None = None  # still escaped
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None
    opaque: str | None = None

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    @property
    def user_unescaped(self) -> str | None:
        return unescape(self.user) if self.user is not None else None

    @property
    def host_plain(self) -> str:
        """Host without IPv6 brackets (for sockets)."""
        h = self.host
        return h[1:-1] if h.startswith("[") else h

    def param(self, name: str) -> str | None:
        """Case-insensitive parameter value ('' for a flag; None if absent); value lower-cased."""
        if name not in self.params:
            return None
        v = self.params[name]
        return "" if v is None else v.lower()

    def __str__(self) -> str:
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out += [":", str(self.port)]
        for k, v in self.params.items():
            out += [";", k] if v is None else [";", k, "=", v]
        if self.headers is not None:
            out += ["?", self.headers]
        return "".join(out)


def _split_hostport(s: str) -> tuple[str, int | None]:
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ParseError("unterminated IPv6 reference")
        host, rest = s[: end + 1], s[end + 1 :]
        if not rest:
            port = None
        elif rest[0] == ":" and rest[1:].isdigit():
            port = int(rest[1:])
        else:
            raise ParseError(f"bad host:port {_show(s)}")
    else:
        host, sep, p = s.partition(":")
        if sep:
            if not p.isdigit():
                raise ParseError(f"bad port in {_show(s)}")
            port = int(p)
        else:
            port = None
    if not _HOST_RE.match(host):
        raise ParseError(f"bad host {_show(host)}")
    if port is not None and port > 65535:
        raise ParseError("port out of range")
    return host, port


def parse_uri(s: str) -> Uri:
    """Parse a URI (no surrounding whitespace or brackets allowed)."""
    if len(s) > MAX_URI:
        raise ParseError(f"URI longer than {MAX_URI} characters")
    m = _SCHEME_RE.match(s)
    if m is None:
        raise ParseError(f"bad URI {_show(s)}")
    scheme = m.group(1).lower()
    rest = s[m.end() :]
    if not rest or any(c in rest for c in " \t\r\n<>\""):
        raise ParseError(f"bad URI {_show(s)}")
    if scheme not in ("sip", "sips"):
        return Uri(scheme=scheme, opaque=rest)
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, sep, pw = userinfo.partition(":")
        if sep:
            password = pw
        if not user:
            raise ParseError("empty user part")
    headers = None
    q = rest.find("?")
    if q >= 0:
        rest, headers = rest[:q], rest[q + 1 :]
    semi = rest.find(";")
    if semi >= 0:
        hostport, params = rest[:semi], parse_params(rest[semi:])
    else:
        hostport, params = rest, {}
    host, port = _split_hostport(hostport)
    return Uri(scheme, user, password, host, port, params, headers)


@dataclass(slots=True)
class NameAddr:
    """``"Display" <uri>;params`` (From, To, Contact, Route, Record-Route)."""

    uri: Uri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    raw_uri: str = ""

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        out = []
        if self.display is not None:
            esc = self.display.replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'"{esc}" ')
        out.append(f"<{self.raw_uri or self.uri}>")
        for k, v in self.params.items():
            out.append(f";{k}" if v is None else f";{k}={v}")
        return "".join(out)


# Linear by construction: matched at one position, and every repetition is possessive over a
# character class disjoint from what follows it, so a failure never backtracks.  (The old form,
# ``((?:token\s*)*?)``, could split a token run in exponentially many ways: a 523-byte INVITE
# whose display name was a token run with a NUL inside held the CPU for minutes.)
_NAME_ADDR_RE = re.compile(
    r'\s*+(?:"((?:[^"\\]++|\\.)*+)"\s*+|([A-Za-z0-9\-.!%*_+`\'~\s]*+))<([^\s<>]++)>(.*)\Z', re.S
)
_ADDR_SPEC_RE = re.compile(r"\s*+([^\s;<>\"]++)(.*)\Z", re.S)
_QPAIR_RE = re.compile(r"\\(.)", re.S)


def _unquote_pair(m: re.Match[str]) -> str:
    return m.group(1)  # a function is 3x faster than the template "\1" per match


def parse_name_addr(s: str, *, header_params_allowed: bool = True) -> NameAddr:
    """Parse a name-addr or addr-spec with header parameters; reject malformed ones."""
    m = _NAME_ADDR_RE.match(s)
    if m is not None:
        quoted, token_dn, raw, rest = m.groups()
        if quoted is not None:
            display = _QPAIR_RE.sub(_unquote_pair, quoted) if "\\" in quoted else quoted
        else:
            display = (token_dn.strip() or None) if token_dn else None
        uri = parse_uri(raw)
    else:
        if "<" in s or '"' in s:
            raise ParseError(f"bad name-addr {_show(s)}")
        m = _ADDR_SPEC_RE.match(s)
        if m is None:
            raise ParseError(f"bad addr-spec {_show(s)}")
        raw, rest = m.groups()
        display = None
        # In addr-spec form, ';' starts header params and '?' cannot appear (RFC 3261 20.10).
        uri = parse_uri(raw)
        if uri.headers is not None:
            raise ParseError("URI headers need <> in a header field")
    rest = rest.rstrip()
    params = parse_params(rest) if rest else {}
    return NameAddr(uri=uri, display=display, params=params, raw_uri=raw)


# A quoted string (to its end if unterminated), in one linear match.
_QUOTED_STRING_RE = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.S)


def _blank(m: re.Match[str]) -> str:
    return "_" * (m.end() - m.start())


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and <...>.

    Linear, and in C throughout (no Python step per character or per part, which a 64 KB list
    of empty items would make 65,536 of): quoted strings are blanked out by one regex pass
    (same length, so offsets hold), the bracket depth after each comma-separated piece is a
    running sum of bracket counts, and the value is cut after the pieces where it is zero.
    """
    if "," not in value:
        return [value]
    plain = _QUOTED_STRING_RE.sub(_blank, value) if '"' in value else value
    pieces = plain.split(",")
    if "<" not in plain and ">" not in plain:
        if plain is value:
            return pieces
        cuts: Iterable[int] = range(len(pieces) - 1)
    else:
        depths = accumulate(map(sub, map(str.count, pieces, repeat("<")), map(str.count, pieces, repeat(">"))))
        cuts = list(compress(range(len(pieces) - 1), map((0).__eq__, depths)))
        if plain is value and len(cuts) == len(pieces) - 1:
            return pieces
    ends = list(accumulate(map(len, pieces)))  # piece i ends at ends[i] + i in value (i commas before it)
    stops = list(map(add, map(ends.__getitem__, cuts), cuts))
    starts = chain((0,), map((1).__add__, stops))
    return list(map(value.__getitem__, map(slice, starts, chain(stops, (len(value),)))))


# ---------------------------------------------------------------------------------------------
# Via

_VIA_RE = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*(" + _TOKEN + r")\s+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_\-.]+)(?:\s*:\s*(\d{1,5}))?\s*(.*)\Z",
    re.S,
)


@dataclass(slots=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]
    raw: str = ""

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return f"{self.host}:{self.port or 5060}"


def parse_via_list(value: str) -> list[Via]:
    out = []
    for part in split_header_list(value):
        m = _VIA_RE.match(part)
        if m is None:
            raise ParseError(f"bad Via {_show(part.strip())}")
        transport, host, port, rest = m.groups()
        rest = rest.rstrip()
        params = parse_params(rest) if rest else {}
        out.append(Via(transport.upper(), host, int(port) if port else None, params, part.strip()))
    return out


# ---------------------------------------------------------------------------------------------
# Messages


class Message:
    """Common part of requests and responses: ordered headers (lower-case names) and a body."""

    __slots__ = ("headers", "body", "call_id", "cseq", "cseq_method", "from_", "to", "vias", "_extra")

    headers: list[tuple[str, str]]
    body: bytes
    call_id: str
    cseq: int
    cseq_method: str
    from_: NameAddr
    to: NameAddr
    vias: list[Via]

    def get(self, name: str) -> str | None:
        """First value of header *name* (lower-case full name), or None."""
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """All values of *name*, comma-separated lists split into items."""
        out: list[str] = []
        for k, v in self.headers:
            if k == name:
                out.extend(p.strip() for p in split_header_list(v))
        return out

    def raw_all(self, name: str) -> list[str]:
        """All header lines of *name*, unsplit."""
        return [v for k, v in self.headers if k == name]

    @property
    def from_tag(self) -> str | None:
        return self.from_.params.get("tag")

    @property
    def to_tag(self) -> str | None:
        return self.to.params.get("tag")

    @property
    def content_length(self) -> int:
        return len(self.body)

    @property
    def content_type(self) -> str | None:
        v = self.get("content-type")
        return v.strip() if v is not None else None

    def contacts(self) -> list[NameAddr]:
        out = []
        for v in self.get_all("contact"):
            if v == "*":
                continue
            out.append(parse_name_addr(v))
        return out

    def _start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Wire form; Content-Length is rewritten to the body length."""
        lines = [self._start_line()]
        for k, v in self.headers:
            if k != "content-length":
                lines.append(f"{canonical_name(k)}: {v}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body


class Request(Message):
    __slots__ = ("method", "uri", "uri_str")

    method: str
    uri: Uri
    uri_str: str

    def _start_line(self) -> str:
        return f"{self.method} {self.uri_str} SIP/2.0"

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri_str} cseq={self.cseq}>"


class Response(Message):
    __slots__ = ("status", "reason")

    status: int
    reason: str

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.cseq_method}>"


def header_end(data: bytes, start: int = 0) -> int:
    """Index just past the blank line ending the header section, or -1."""
    i = data.find(b"\r\n\r\n", start)
    return -1 if i < 0 else i + 4


def framing_length(head: bytes) -> int:
    """Content-Length from a raw header block for stream framing (0 if absent).

    Raises ParseError when it is not one unambiguous number (the stream cannot be resynchronised).
    """
    values = {m.group(1).strip() for m in _CL_RE.finditer(head)}
    if not values:
        return 0
    if len(values) > 1:
        raise ParseError("conflicting Content-Length")
    v = values.pop()
    if not v.isdigit() or len(v) > 9:
        raise ParseError("bad Content-Length")
    return int(v)


def _unfold(head: str) -> list[str]:
    """Header lines with continuation lines joined (LWS = [*WSP CRLF] 1*WSP becomes one SP).

    Linear: each physical line is stripped once.  (A regex substitution of ``[ \\t]*\\r\\n[ \\t]+``
    rescans a long run of blanks from every position in it: 1.8 s for 64 KB.)
    """
    raw = head.split("\r\n")
    if "\r\n " not in head and "\r\n\t" not in head:
        return raw
    fields: list[list[str]] = []
    for ln in raw:
        if fields and ln[:1] in (" ", "\t"):
            cur = fields[-1]
            cur[-1] = cur[-1].rstrip(" \t")
            cur.append(ln.lstrip(" \t"))
        else:
            fields.append([ln])
    return [f[0] if len(f) == 1 else " ".join(f) for f in fields]


def parse(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one message.  Over UDP (``stream=False``) a missing Content-Length means the rest of
    the datagram is the body, and bytes after the declared length are ignored (RFC 3261 18.3).

    A message over the limits above raises ParseError with 513 (message or header section too
    large), 414 (Request-URI), 413 (body) or 400 (too many or too long header fields)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ParseError(f"message larger than {MAX_MESSAGE_BYTES} bytes", 513)
    end = data.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
    if end < 0:
        if len(data) > MAX_HEADER_BYTES:
            raise ParseError(f"header section larger than {MAX_HEADER_BYTES} bytes", 513)
        raise ParseError("header section not terminated")
    try:
        head = data[:end].decode("utf-8", "surrogateescape")
    except Exception as exc:  # pragma: no cover - surrogateescape does not fail
        raise ParseError("undecodable header") from exc
    lines = _unfold(head)
    if len(lines) > MAX_HEADERS + 1:
        raise ParseError(f"more than {MAX_HEADERS} header fields")
    start = lines[0]
    msg: Request | Response
    if start.startswith("SIP/"):
        if len(start) > MAX_LINE:
            raise ParseError(f"status line longer than {MAX_LINE} characters")
        m = _STATUS_RE.match(start)
        if m is None:
            raise ParseError(f"bad status line {_show(start)}")
        msg = Response()
        msg.status = int(m.group(1))
        msg.reason = m.group(2)
    else:
        parts = start.split(" ", 3)
        if len(parts) != 3:
            raise ParseError(f"bad request line {_show(start)}")
        method, uri_s, version = parts
        if version != "SIP/2.0":
            if _VERSION_RE.match(version):
                raise ParseError(f"unsupported version {_show(version)}", 505)
            raise ParseError(f"bad request line {_show(start)}")
        if len(method) > 64 or not _METHOD_RE.match(method):
            raise ParseError(f"bad method {_show(method)}")
        if len(uri_s) > MAX_URI:
            raise ParseError(f"Request-URI longer than {MAX_URI} characters", 414)
        uri = parse_uri(uri_s)
        if uri.is_sip and uri.headers is not None:
            raise ParseError("headers in Request-URI")
        msg = Request()
        msg.method = method
        msg.uri = uri
        msg.uri_str = uri_s
    headers: list[tuple[str, str]] = []
    seen_single: set[str] = set()
    for line in lines[1:]:
        if len(line) > MAX_LINE:
            raise ParseError(f"header field longer than {MAX_LINE} characters: {_show(line[:40])}")
        colon = line.find(":")
        if colon <= 0:
            raise ParseError(f"bad header line {_show(line)}")
        name = line[:colon].rstrip(" \t")
        if not _HEADER_NAME_RE.match(name):
            raise ParseError(f"bad header name {_show(name)}")
        lname = name.lower()
        lname = COMPACT.get(lname, lname)
        if lname in SINGLE:
            if lname in seen_single:
                raise ParseError(f"duplicate {lname}")
            seen_single.add(lname)
        headers.append((lname, line[colon + 1 :].strip(" \t")))
    msg.headers = headers
    _parse_core(msg, headers)
    # Body framing
    body_start = end + 4
    cls = [v for k, v in headers if k == "content-length"]
    if cls:
        if len(set(cls)) > 1 or len(cls) > 1 and stream:
            raise ParseError("conflicting Content-Length")
        v = cls[0]
        if not v.isdigit() or len(v) > 9:
            raise ParseError("bad Content-Length")
        n = int(v)
        if n > MAX_BODY_BYTES:
            raise ParseError(f"body larger than {MAX_BODY_BYTES} bytes", 413)
        if body_start + n > len(data):
            raise ParseError("Content-Length larger than message")
        msg.body = data[body_start : body_start + n]
    else:
        msg.body = b"" if stream else data[body_start:]
        if len(msg.body) > MAX_BODY_BYTES:
            raise ParseError(f"body larger than {MAX_BODY_BYTES} bytes", 413)
    if isinstance(msg, Request) and msg.cseq_method != msg.method:
        raise ParseError("CSeq method does not match request method")
    return msg


def _parse_core(msg: Message, headers: list[tuple[str, str]]) -> None:
    call_id = cseq = frm = to = None
    via_values: list[str] = []
    date = contact = None
    for k, v in headers:
        if k == "via":
            via_values.append(v)
        elif k == "call-id":
            call_id = v
        elif k == "cseq":
            cseq = v
        elif k == "from":
            frm = v
        elif k == "to":
            to = v
        elif k == "date":
            date = v
        elif k == "contact" and contact is None:
            contact = v
    if not via_values:
        raise ParseError("missing Via")
    if call_id is None or frm is None or to is None or cseq is None:
        raise ParseError("missing Call-ID, From, To or CSeq")
    if not call_id or any(c in call_id for c in " \t"):
        raise ParseError("bad Call-ID")
    m = _CSEQ_RE.match(cseq)
    if m is None:
        raise ParseError("bad CSeq")
    num = int(m.group(1))
    if num > MAX_CSEQ:
        raise ParseError("CSeq number too large")
    vias: list[Via] = []
    for v in via_values:
        vias.extend(parse_via_list(v))
    msg.call_id = call_id
    msg.cseq = num
    msg.cseq_method = m.group(2)
    msg.from_ = parse_name_addr(frm)
    msg.to = parse_name_addr(to)
    msg.vias = vias
    if date is not None and not date.rstrip().endswith("GMT"):
        raise ParseError("Date must be in GMT")
    if contact is not None and "<" not in contact and "?" in contact:
        raise ParseError("URI headers need <> in Contact")
    if contact is not None:
        # The first Contact becomes a dialog's remote target: one that does not parse is a 400
        # here, not a call answered towards the From URI instead.
        first = split_header_list(contact)[0].strip()
        if first != "*":
            parse_name_addr(first)


def build_request_head(method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """Serialize a request we originate (headers given in display form, in order)."""
    lines = [f"{method} {uri} SIP/2.0"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
