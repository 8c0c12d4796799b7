"""HTTP-side suites: every route from /openapi.json plus the four vendor dialects with mutated
bodies, content types and raw request bytes; BXML documents; WAV/MP3 files played by URL and
uploaded with PUT /v1/media. Counts 5xx answers besides the oracle."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import http.client
import io
import json
import logging
import random
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import numpy as np
from aiohttp import web

from .mutate import mutate
from .oracle import Checker, SuiteResult
from .sipmsg import STRAY_HOSTS, Targets
from .sipsuites import Harness
from .sut import ACS_KEY_B64, BW_ACCOUNT, BW_PASS, BW_USER, PLIVO_ID, PLIVO_TOKEN, TELNYX_KEY, ServerUnderTest


# -- an audio/BXML origin in a thread --------------------------------------------------------
class Origin:
    """aiohttp server on loopback: serves whatever the suite put in ``files`` (mutated audio, BXML)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.hits = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="origin")
        self._runner: web.AppRunner | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    async def _serve(self, request: web.Request) -> web.Response:
        self.hits += 1
        body, ctype = self.files.get(request.match_info["name"], (b"", ""))
        if not ctype:
            return web.Response(status=404)
        return web.Response(body=body, content_type=ctype)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{name}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> None:
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # the origin's own parse errors: not the SUT's
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        from .oracle import BENIGN_REMOTES
        BENIGN_REMOTES.add(f"127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# -- audio seeds -----------------------------------------------------------------------------
def wav(rate: int = 8000, seconds: float = 0.3, fmt: int = 1, bits: int = 16, channels: int = 1) -> bytes:
    n = int(rate * seconds)
    pcm = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate) * 32767).astype("<i2").tobytes()
    block = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def mp3(rate: int = 8000, seconds: float = 0.3) -> bytes:
    import av
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        pcm = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def audio_mutation(seed: bytes, rnd: random.Random) -> bytes:
    """Header-focused: most mutations land in the first 64 bytes (RIFF/fmt/data sizes, MP3 frame headers)."""
    data = bytearray(seed)
    for _ in range(rnd.choice((1, 2, 3))):
        op = rnd.randrange(5)
        pos = rnd.randrange(min(len(data), 64)) if data else 0
        if op == 0 and data:
            data[pos] = rnd.randrange(256)
        elif op == 1 and len(data) >= pos + 4:
            data[pos:pos + 4] = struct.pack("<I", rnd.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFF0, 44, 3)))
        elif op == 2 and len(data) >= pos + 2:
            data[pos:pos + 2] = struct.pack("<H", rnd.choice((0, 1, 2, 3, 0xFFFE, 0xFFFF, 255, 6, 7, 85)))
        elif op == 3:
            del data[rnd.randrange(len(data) + 1):]
        else:
            return mutate(bytes(data), rnd, 1 << 20)
    return bytes(data)


# -- HTTP plumbing ---------------------------------------------------------------------------
def request(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            timeout: float = 5.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def raw_request(port: int, data: bytes, timeout: float = 2.0) -> int | None:
    """Raw bytes to the HTTP port (malformed request lines and headers); the status if one came."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            head = s.recv(64)
    except OSError:
        return None
    try:
        return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None
    except (IndexError, ValueError):
        return None


def acs_headers(method: str, path: str, body: bytes, host: str) -> dict[str, str]:
    date = formatdate(usegmt=True)
    content_hash = base64.b64encode(hashlib.sha256(body).digest()).decode()
    to_sign = f"{method}\n{path}\n{date};{host};{content_hash}"
    sig = base64.b64encode(hmac.new(base64.b64decode(ACS_KEY_B64), to_sign.encode(), hashlib.sha256).digest()).decode()
    return {"x-ms-date": date, "x-ms-content-sha256": content_hash, "Host": host,
            "Authorization": f"HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={sig}"}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- route seeds -----------------------------------------------------------------------------
def routes(openapi: dict[str, Any], call_id: str, playback_id: str, room_id: str, url: str) -> list[tuple[str, str, Any, str]]:
    """(method, path, seed JSON body or None, dialect) for every route: OpenAPI's plus the dialects'."""
    seeds: dict[str, Any] = {
        "/v1/calls": {"to": "sip:fuzz@127.0.0.1:9", "timeout_s": 1},
        "/v1/calls/{call_id}/playbacks": {"media": url, "loop": 1, "command_id": "c1"},
        "/v1/playbacks/{playback_id}/control": {"action": "pause"},
        "/v1/media-cache/prefetch": {"url": url},
        "/v1/calls/{call_id}/bridge": {"peer_call_id": call_id},
        "/v1/rooms": {"name": "r1"},
        "/v1/rooms/{room_id}/join": {"call_id": call_id},
        "/v1/rooms/{room_id}/leave": {"call_id": call_id},
    }
    out: list[tuple[str, str, Any, str]] = []
    for path, ops in openapi.get("paths", {}).items():
        for method, op in ops.items():
            if not isinstance(op, dict) or method.upper() not in ("GET", "POST", "PUT", "DELETE", "PATCH"):
                continue
            if method.upper() == "DELETE" and "{call_id}" in path and path.endswith("{call_id}"):
                continue  # hangs the fuzzed call up; covered by the dialects' hangups at the end
            if path == "/v1/events" and method.upper() == "GET":
                continue  # an event stream: never ends by itself
            if path == "/v1/drain":
                continue  # an operator's rolling-restart command: the node exits by design once idle
            concrete = (path.replace("{call_id}", call_id).replace("{playback_id}", playback_id)
                        .replace("{room_id}", room_id).replace("{name}", "fuzz.wav"))
            out.append((method.upper(), concrete, seeds.get(path), "native"))
    q = urllib.parse.quote(call_id, safe="")
    out += [
        ("POST", f"/v2/calls/{q}/actions/playback_start", {"audio_url": url, "loop": 1}, "telnyx"),
        ("POST", f"/v2/calls/{q}/actions/playback_stop", {"stop": "all"}, "telnyx"),
        ("POST", f"/v2/calls/{q}/actions/bridge", {"call_control_id": call_id}, "telnyx"),
        ("POST", f"/v2/calls/{q}/actions/answer", {"webhook_url": url}, "telnyx"),
        ("POST", f"/v1/Account/{PLIVO_ID}/Call/{q}/Play/", {"urls": url, "loop": False}, "plivo"),
        ("DELETE", f"/v1/Account/{PLIVO_ID}/Call/{q}/Play/", None, "plivo"),
        ("POST", f"/calling/callConnections/{q}:play?api-version=2023-10-15",
         {"playSources": [{"kind": "file", "file": {"uri": url}}], "playTo": []}, "acs"),
        ("POST", f"/calling/callConnections/{q}:cancelAllMediaOperations?api-version=2023-10-15", {}, "acs"),
        ("POST", f"/api/v2/accounts/{BW_ACCOUNT}/calls/{q}", {"state": "active", "redirectUrl": url}, "bandwidth"),
        ("POST", "/api/v2/oauth2/token", None, "bandwidth-token"),
    ]
    return out


def auth(dialect: str, method: str, path: str, body: bytes, port: int) -> dict[str, str]:
    if dialect == "telnyx":
        return {"Authorization": f"Bearer {TELNYX_KEY}"}
    if dialect == "plivo":
        return {"Authorization": basic(PLIVO_ID, PLIVO_TOKEN)}
    if dialect.startswith("bandwidth"):
        return {"Authorization": basic(BW_USER, BW_PASS)}
    if dialect == "acs":
        return acs_headers(method, path, body, f"127.0.0.1:{port}")
    return {}


INTERESTING_JSON: list[Any] = [None, True, -1, 0, 2**63, 2**64 + 1, 1e308, -1e308, float("nan"), "", "a" * 100_000,
                               "\x00", "\ud800", [], {}, [[[[[]]]]], "http://169.254.169.254/latest/meta-data/",
                               f"http://{STRAY_HOSTS[0]}:9/x.wav", "file:///etc/passwd", "gopher://127.0.0.1:9/",
                               "sip:x@127.77.0.1", "%s%n%x", "../../../etc/passwd", "infinity", "-infinity"]


def json_mutation(seed: Any, rnd: random.Random) -> bytes:
    """Structural mutations of a JSON seed, sometimes byte-mutated on top, sometimes a nesting bomb."""
    r = rnd.random()
    if r < 0.05:
        depth = rnd.choice((100, 1000, 100_000))
        return ("[" * depth + "]" * depth).encode() if rnd.random() < 0.5 else ('{"a":' * depth + "1" + "}" * depth).encode()
    doc = copy.deepcopy(seed) if seed is not None else {}
    for _ in range(rnd.choice((1, 2, 3))):
        if isinstance(doc, dict) and doc and rnd.random() < 0.7:
            key = rnd.choice(list(doc))
            op = rnd.randrange(4)
            if op == 0:
                doc[key] = rnd.choice(INTERESTING_JSON)
            elif op == 1:
                del doc[key]
            elif op == 2:
                doc[key + rnd.choice(("", "_", "\x00", "é"))] = rnd.choice(INTERESTING_JSON)
            else:
                doc[key] = [doc[key]] * rnd.choice((1, 1000))
        else:
            doc = rnd.choice(INTERESTING_JSON + [doc])
    try:
        raw = json.dumps(doc, allow_nan=True).encode()
    except (TypeError, ValueError):
        raw = b"{}"
    if rnd.random() < 0.25:
        raw = mutate(raw, rnd, 200_000)
    return raw


CONTENT_TYPES = ["application/json", "application/json", "application/json", "text/plain", "",
                 "multipart/form-data", "multipart/form-data; boundary=", "application/x-www-form-urlencoded",
                 "application/json; charset=utf-1024", "application/xml", "audio/wav", "*/*;;;=",
                 "application/json\x00", "a" * 10_000]


def _live_call(h: Harness) -> tuple[str, socket.socket, bytes] | None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    placed = h.place_call(rx)
    if placed is None:
        rx.close()
        return None
    ok, _port = placed
    sip_cid = (ok.split(b"\r\n\r\n")[0].split(b"\r\n"))
    sip_call_id = next((ln.split(b":", 1)[1].strip().decode() for ln in sip_cid if ln.lower().startswith((b"call-id:", b"i:"))), "")
    for _ in range(30):
        calls = (h.sut.get_json("/v1/calls") or {}).get("calls", [])
        match = [c["call_id"] for c in calls if c.get("sip_call_id") == sip_call_id]
        if match:
            return match[0], rx, ok
        time.sleep(0.05)
    rx.close()
    return None


def _status_check(r: SuiteResult, name: str, status: int | None) -> None:
    r.http_status(name, status)


# Metadata and link-local services an API client must not make the server reach (IPv4 and IPv6).
METADATA_HOSTS = ["169.254.169.254", "192.0.0.192", "100.100.100.200", "[fd00:ec2::254]", "169.254.170.2"]


def egress_cases(call_id: str, url: str) -> list[tuple[str, str, str, dict[str, Any], str]]:
    """(field, dialect, path, body with {X} where the URL goes) for every URL an API client supplies."""
    q = urllib.parse.quote(call_id, safe="")
    return [
        ("native media", "native", f"/v1/calls/{call_id}/playbacks", {"media": "{X}"}),
        ("native prefetch", "native", "/v1/media-cache/prefetch", {"url": "{X}"}),
        ("telnyx audio_url", "telnyx", f"/v2/calls/{q}/actions/playback_start", {"audio_url": "{X}"}),
        ("telnyx webhook_url", "telnyx", f"/v2/calls/{q}/actions/playback_start", {"audio_url": url, "webhook_url": "{X}"}),
        ("plivo urls", "plivo", f"/v1/Account/{PLIVO_ID}/Call/{q}/Play/", {"urls": "{X}"}),
        ("plivo callback_url", "plivo", f"/v1/Account/{PLIVO_ID}/Call/{q}/Play/", {"urls": url, "callback_url": "{X}"}),
        ("acs file uri", "acs", f"/calling/callConnections/{q}:play?api-version=2023-10-15",
         {"playSources": [{"kind": "file", "file": {"uri": "{X}"}}], "playTo": []}),
        ("acs operationCallbackUri", "acs", f"/calling/callConnections/{q}:play?api-version=2023-10-15",
         {"playSources": [{"kind": "file", "file": {"uri": url}}], "playTo": [], "operationCallbackUri": "{X}"}),
        ("bandwidth redirectUrl", "bandwidth", f"/api/v2/accounts/{BW_ACCOUNT}/calls/{q}", {"redirectUrl": "{X}"}),
    ]  # type: ignore[return-value]


def egress_check(h: Harness, r: SuiteResult, call_id: str, url: str) -> Callable[[], None]:
    """Each URL field × each metadata address, the field told apart by port (8000 + i): any packet
    to such an address (the namespace's default route sees it) is a finding naming field and address.
    Returns what tallies them, to be called at the end of the suite (webhooks are retried late)."""
    if h.tap is None:
        return lambda: None
    cases = egress_cases(call_id, url)
    before = dict(h.tap.seen)
    for i, (field, dialect, path, body) in enumerate(cases):
        for host in METADATA_HOSTS:
            target = f"http://{host}:{8000 + i}/latest/meta-data/"
            raw = json.dumps(body).replace('"{X}"', json.dumps(target)).encode()
            status = request(h.sut.http_port, "POST", path, raw,
                             {"Content-Type": "application/json", **auth(dialect, "POST", path, raw, h.sut.http_port)})
            r.sent += 1
            r.http_status(f"egress {field} -> {target}", status)
        request(h.sut.http_port, "DELETE", f"/v1/calls/{call_id}/playbacks")

    def tally() -> None:
        assert h.tap is not None
        new = {k: v - before.get(k, 0) for k, v in h.tap.seen.items() if v > before.get(k, 0)}
        for key, n in sorted(new.items()):
            port = int(key.rsplit(":", 1)[1])
            if 8000 <= port < 8000 + len(cases):
                r.wrong += 1
                r.add("egress", cases[port - 8000][0], f"{key} x{n}: the server connected to a metadata address an API client gave")
    return tally


def suite_http(h: Harness, origin: Origin) -> SuiteResult:
    n = 100_000 if h.long else max(1, int(2000 * h.scale))
    origin.files["tone.wav"] = (wav(), "audio/wav")

    def body(r: SuiteResult) -> None:
        live = _live_call(h)
        if live is None:
            r.add("harness", "http/setup", "no live call")
            return
        call_id, rx, ok = live
        tally_egress = egress_check(h, r, call_id, origin.url("tone.wav"))
        openapi = h.sut.get_json("/openapi.json") or {}
        pb = 0
        rts = routes(openapi, call_id, "pb-unknown", "room-unknown", origin.url("tone.wav"))
        rnd = random.Random(f"{h.seed}-http")
        port = h.sut.http_port

        def cases() -> Iterator[tuple[str, str, str, bytes, str, str]]:
            # first: every route with its valid seed, then with an empty body under each content type
            for method, path, seed, dialect in rts:
                yield "seed", method, path, json.dumps(seed).encode() if seed is not None else b"", "application/json", dialect
                for ct in ("multipart/form-data", "text/plain", "application/x-www-form-urlencoded"):
                    yield "ctype", method, path, b"--x\r\n", ct, dialect
            for i in range(n):
                method, path, seed, dialect = rnd.choice(rts)
                kind = rnd.random()
                if kind < 0.1:
                    raw = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n".encode()
                    yield f"raw#{i}", "RAW", path, mutate(raw, rnd, 20_000), "", dialect
                else:
                    yield f"#{i}", method, path, json_mutation(seed, rnd), rnd.choice(CONTENT_TYPES), dialect

        def send(c: tuple[str, str, str, bytes, str, str]) -> None:
            tag, method, path, data, ctype, dialect = c
            if method == "RAW":
                status = raw_request(port, data)
            else:
                headers = auth(dialect, method, path, data, port)
                if ctype:
                    headers["Content-Type"] = ctype
                status = request(port, method, path, data, headers)
            _status_check(r, f"{method} {path} [{ctype[:40]}] {tag}: {data[:120]!r}", status)
            return None

        h.checker(r, send, lambda c: f"{c[1]} {c[2]} {c[0]}", every=25).run(cases())
        time.sleep(2.0 if h.scale >= 1 or h.long else 1.0)  # the last webhook retries
        tally_egress()
        del pb
        h.hang_up(ok)
        rx.close()
    return h.run("HTTP routes (OpenAPI + 4 dialects)", body)


BXML_SEEDS = [
    '<?xml version="1.0" encoding="UTF-8"?><Response><PlayAudio>{url}</PlayAudio><Pause duration="1"/></Response>',
    '<Response><SpeakSentence voice="julie">hello</SpeakSentence><Redirect redirectUrl="{url}"/></Response>',
    '<Bxml><PlayAudio username="u" password="p">{url}</PlayAudio><Hangup/></Bxml>',
]
BXML_HOSTILE = [
    ('billion-laughs', '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
     '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">'
     '<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">]>'
     '<Response><PlayAudio>&f;</PlayAudio></Response>'),
    ('xxe-stray', '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "http://{stray}:9/x">]><Response><PlayAudio>&x;</PlayAudio></Response>'),
    ('xxe-file', '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response><PlayAudio>&x;</PlayAudio></Response>'),
    ('deep-nesting', '<Response>' + '<a>' * 50_000 + '</a>' * 50_000 + '</Response>'),
    ('many-verbs', '<Response>' + '<Pause duration="0"/>' * 100_000 + '</Response>'),
    ('redirect-loop', '<Response><Redirect redirectUrl="{self}"/></Response>'),
    ('redirect-metadata', '<Response><Redirect redirectUrl="http://169.254.169.254/latest/meta-data/"/></Response>'),
    ('play-stray', '<Response><PlayAudio>http://{stray}:9/x.wav</PlayAudio></Response>'),
    ('huge-attribute', '<Response><Pause duration="' + '9' * 100_000 + '"/></Response>'),
    ('bad-utf8', '<Response><PlayAudio>\udcff\udcfe</PlayAudio></Response>'),
    ('nul', '<Response>\x00<Hangup/></Response>'),
    ('empty', ''),
]


def suite_bxml(h: Harness, origin: Origin) -> SuiteResult:
    n = 100_000 if h.long else max(1, int(1000 * h.scale))
    origin.files["tone.wav"] = (wav(), "audio/wav")
    url = origin.url("tone.wav")

    def body(r: SuiteResult) -> None:
        live = _live_call(h)
        if live is None:
            r.add("harness", "bxml/setup", "no live call")
            return
        call_id, rx, ok = live
        path = f"/api/v2/accounts/{BW_ACCOUNT}/calls/{urllib.parse.quote(call_id, safe='')}/bxml"
        rnd = random.Random(f"{h.seed}-bxml")
        origin.files["self.xml"] = (BXML_HOSTILE[5][1].format(self=origin.url("self.xml")).encode(), "application/xml")

        def render(s: str) -> bytes:
            return s.replace("{url}", url).replace("{stray}", STRAY_HOSTS[3]).replace(
                "{self}", origin.url("self.xml")).encode("utf-8", errors="surrogateescape")

        def cases() -> Iterator[tuple[str, bytes]]:
            for name, doc in BXML_HOSTILE:
                yield f"bxml/{name}", render(doc)
            for i in range(n):
                yield f"bxml-mut/seed={h.seed}/#{i}", mutate(render(rnd.choice(BXML_SEEDS)), rnd, 100_000)

        def send(c: tuple[str, bytes]) -> None:
            status = request(h.sut.http_port, "PUT", path, c[1],
                             {"Authorization": basic(BW_USER, BW_PASS), "Content-Type": "application/xml"})
            _status_check(r, c[0], status)
            if status == 409 or status == 404:  # the call ended (a <Hangup/>): place another
                nonlocal_call[0] = _replace_call(h, nonlocal_call)
            return None

        nonlocal_call: list[Any] = [(call_id, rx, ok)]

        def _replace_call(h: Harness, holder: list[Any]) -> Any:
            cur = holder[0]
            if cur:
                cur[1].close()
            new = _live_call(h)
            nonlocal path
            if new:
                path = f"/api/v2/accounts/{BW_ACCOUNT}/calls/{urllib.parse.quote(new[0], safe='')}/bxml"
            return new

        h.checker(r, send, lambda c: c[0], every=20).run(cases())
        hostile = BXML_HOSTILE if h.scale >= 0.5 or h.long else [BXML_HOSTILE[i] for i in (0, 1, 6)]
        answer_url_calls(h, r, origin, [(name, render(doc)) for name, doc in hostile]
                         + [(f"bxml-mut/answer/#{i}", mutate(render(rnd.choice(BXML_SEEDS)), rnd, 100_000))
                            for i in range(2000 if h.long else max(1, int(20 * h.scale)))])
        cur = nonlocal_call[0]
        if cur:
            h.hang_up(cur[2])
            cur[1].close()
    return h.run("BXML (PUT /bxml + answer URL)", body, settle_s=2.0)


def answer_url_calls(h: Harness, r: SuiteResult, origin: Origin, docs: list[tuple[str, bytes]]) -> None:
    """The answer-URL path (a second server, since the answer URL is process-wide): one call per document."""
    sut2 = ServerUnderTest(extra_env={"MEDIASRV_BANDWIDTH_ANSWER_URL": origin.url("answer.xml")})
    sut2.start()
    try:
        h2 = Harness(sut2, Targets(sut2.sip_port, h.t.stray_sip, h.t.stray_rtp), h.sinks, h.tap)

        def send(c: tuple[str, bytes]) -> None:
            origin.files["answer.xml"] = (c[1], "application/xml")
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind(("127.0.0.1", 0))
            try:
                placed = h2.place_call(rx)
                time.sleep(0.1)
                if placed:
                    h2.hang_up(placed[0])
            finally:
                rx.close()
            return None

        Checker(sut2, h2.t, r, send, lambda c: c[0] + " (answer URL)", every=1, tap=h.tap).run(docs)
        left = sut2.active_calls()
        if left > 0:
            r.add("growth", "calls (answer-URL server)", f"{left} calls up after BYE")
        h2.peer.close()
    finally:
        origin.files.pop("answer.xml", None)
        sut2.stop()


def suite_audio(h: Harness, origin: Origin) -> SuiteResult:
    n = 100_000 if h.long else max(1, int(400 * h.scale))
    seeds = [("wav", wav(), "audio/wav"), ("wav16k", wav(16000), "audio/wav"), ("mp3", mp3(), "audio/mpeg"),
             ("wav-alaw", wav(fmt=6, bits=8), "audio/wav")]

    def body(r: SuiteResult) -> None:
        live = _live_call(h)
        if live is None:
            r.add("harness", "audio/setup", "no live call")
            return
        call_id, rx, ok = live
        rnd = random.Random(f"{h.seed}-audio")

        def cases() -> Iterator[tuple[str, bytes, str, str]]:
            for i in range(n):
                kind, seed, ctype = rnd.choice(seeds)
                yield f"audio-mut/{kind}/seed={h.seed}/#{i}", audio_mutation(seed, rnd), ctype, rnd.choice(("url", "put"))

        def send(c: tuple[str, bytes, str, str]) -> None:
            name, data, ctype, how = c
            if how == "url":
                fname = f"m{rnd.randrange(1 << 30)}.{'mp3' if 'mpeg' in ctype else 'wav'}"
                origin.files[fname] = (data, ctype)
                status = request(h.sut.http_port, "POST", f"/v1/calls/{call_id}/playbacks",
                                 json.dumps({"media": origin.url(fname)}).encode(), {"Content-Type": "application/json"})
            else:
                status = request(h.sut.http_port, "PUT", "/v1/media/fuzz.wav", data, {"Content-Type": ctype})
            _status_check(r, f"{name} via {how}", status)
            return None

        h.checker(r, send, lambda c: c[0], every=20).run(cases())
        time.sleep(1.0 * min(1.0, 0.3 + h.scale))  # let the last fetches/decodes finish before the tally
        request(h.sut.http_port, "DELETE", f"/v1/calls/{call_id}/playbacks")
        h.hang_up(ok)
        rx.close()
    return h.run("audio files (URL playback + PUT /v1/media)", body, settle_s=2.0)
