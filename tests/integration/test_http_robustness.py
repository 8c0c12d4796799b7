"""Every HTTP route, fed malformed bodies, content types, headers and framing: 4xx, never 5xx, no traceback.

The routes come from the server's own ``/openapi.json`` (native paths plus every dialect's routes
under ``x-dialects``), against a live server on loopback with one answered SIPp call, so the
handlers that validate after finding the call run too.  A 4xx from a route must be in the API's
own error shape (native, Telnyx, Plivo, ACS, Bandwidth).  Raw-socket requests cover what an HTTP
client library would not send (bad Content-Length, huge or broken headers, bad chunking).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mediasrv.demo import free_port_pair
from tests.support.acs import KEY as ACS_KEY
from tests.support.acs import signed_headers
from tests.support.paths import SCENARIOS
from tests.support.server import Running, start_server
from tests.support.sipp import answered_calls, start_sipp

pytestmark = pytest.mark.integration

TELNYX_KEY = "KEY_robustness"
PLIVO_ID, PLIVO_TOKEN = "MAXXXXXXXXXXXXXXXXXX", "plivo-robust-token"
ACCOUNT = "9900000"
ENDS_CALL = re.compile(r"hangup|reject|:terminate|/calls/\{call_id\}$|/Call/\{call_uuid\}/?$|callConnections/\{[^}]+\}$")

BODIES: list[tuple[str, bytes]] = [
    ("not utf-8", b"\xff\xfe\xfa{\"a\": \"\xc3\x28\"}"),
    ("invalid json", b"{\"a\": "),
    ("deeply nested arrays", b"[" * 200_000 + b"]" * 200_000),
    ("deeply nested objects", b"{\"a\":" * 50_000 + b"1" + b"}" * 50_000),
    ("json array", b"[1, 2, 3]"),
    ("json string", b"\"text\""),
    ("json null", b"null"),
    ("json number", b"1e999999"),
    ("wrong types", json.dumps({k: v for k, v in zip(
        ["urls", "audio_url", "sources", "url", "playSources", "loop", "callback_url", "webhook_url", "to", "legs",
         "operationCallbackUri", "redirectUrl", "state", "command_id", "client_state", "cause", "length", "mix",
         "playOptions", "playTo", "timeout_s", "from", "action", "volume_db", "call_ids", "call_control_id"],
        [1, [], {"x": 1}, 7, "x", "yes", 3, [], {"a": 1}, 9, 1.5, [], 7, 5, [1], 3, "-1", "maybe", [], "x", "1e9",
         {"x": []}, 5, "loud", "x", {"y": 1}], strict=True)}).encode()),
    ("nulls", json.dumps({k: None for k in ["urls", "audio_url", "sources", "url", "playSources", "to"]}).encode()),
    ("huge string", json.dumps({"url": "http://x/" + "a" * 300_000, "urls": "a" * 300_000}).encode()),
    ("bad form", b"urls=%zz%&callback_url=%00&&==&" + b"x" * 10),
    ("xml with entity", b"<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY e \"x\">]><Response>&e;</Response>"),
    ("control bytes", bytes(range(32)) * 10),
]
CONTENT_TYPES = [
    "application/json",
    "multipart/form-data",  # no boundary
    "multipart/form-data; boundary=zzz",  # a boundary the body never uses
    "application/x-www-form-urlencoded",
    "text/plain; charset=no-such-charset",
    "application/json; charset=utf-99",
    "application/xml",
    "*/*; q=abc; ===",
]
HEADERS: list[dict[str, str]] = [
    {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Basic " + "QUJD" * 10},
    {"Authorization": "Bearer"},
    {"Authorization": "HMAC-SHA256 SignedHeaders=&Signature=" + "=" * 50},
    {"Authorization": "Digest " + "a" * 6000},
    {"x-ms-date": "not a date", "x-ms-content-sha256": "???"},
    {"Accept": "text/event-stream;;;", "Last-Event-ID": "-99999999999999999999999"},
    {"Repeatability-Request-ID": "x" * 5000, "Repeatability-First-Sent": "yesterday"},
]
RAW: list[bytes] = [
    b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}",
    b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}}",
    b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n{}",
    b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    b"GET /v1/calls HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    b"GET /v1/calls HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(500)) + b"\r\n",
    b"GET /v1/calls HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"GET /v1/calls HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
    b"GET /v1/calls HTTP/1.1\r\nHost: x\r\nX: \x00\x01\r\n\r\n",
    b"POST /v1/calls HTTP/1.1\r\nHost: x\r\nContent-Type: \x7f/\x7f\r\nContent-Length: 2\r\n\r\n{}",
    b"GET /v1/calls/%zz%00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/calls/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET /v1/calls HTTP/9.9\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS ClientHello on the plain port
    b"PUT /v1/media/x.wav HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data\r\nContent-Length: 4\r\n\r\nabcd",
    b"PUT /v1/media/x.wav HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    b"Content-Length: 40\r\n\r\n--b\r\nContent-Disposition: form-data\r\n\r\n",
    b"POST /v2/calls/x/actions/answer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TELNYX_KEY.encode()
    + b"\r\nContent-Type: application/json; charset=latin-99\r\nContent-Length: 2\r\n\r\n{}",
]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()[:300]}" for r in self.records
                if r.exc_info or r.levelno >= logging.ERROR or "Traceback" in r.getMessage()]


def error_shape_ok(path: str, status: int, body: Any) -> bool:
    """A 4xx from a route in its API's own error shape."""
    if path.startswith("/v2/"):
        return isinstance(body, dict) and isinstance(body.get("errors"), list) and "code" in body["errors"][0]
    if path.startswith("/v1/Account/"):
        return isinstance(body, dict) and "error" in body and "api_id" in body
    if path.startswith("/api/v2/oauth2/"):
        return isinstance(body, dict) and "error" in body
    if path.startswith("/api/v2/"):
        return isinstance(body, dict) and {"type", "description"} <= set(body)
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and "code" in body["error"]


def auth_for(method: str, url: str, path: str, body: bytes) -> dict[str, str]:
    """Valid credentials for the route's API, so the body is what gets refused (not the caller)."""
    if path.startswith("/v2/"):
        return {"Authorization": f"Bearer {TELNYX_KEY}"}
    if path.startswith("/v1/Account/"):
        return {"Authorization": "Basic " + base64.b64encode(f"{PLIVO_ID}:{PLIVO_TOKEN}".encode()).decode()}
    if path.startswith("/api/v2/"):
        return {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    if path.startswith("/calling/"):
        return signed_headers(method, url, body, ACS_KEY)
    return {}


def fill(path: str, call_id: str) -> str:
    values = {"call_id": call_id, "call_control_id": call_id, "call_uuid": call_id, "callConnectionId": call_id,
              "call_connection_id": call_id, "auth_id": PLIVO_ID, "account_id": ACCOUNT, "name": "x.wav",
              "playback_id": "nope", "room_id": "nope"}
    return re.sub(r"\{([^}:]+)[^}]*\}", lambda m: values.get(m.group(1), "nope"), path)


def routes(doc: dict[str, Any]) -> list[tuple[str, str]]:
    found = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m in ("get", "post", "put", "delete")}
    for dialect in doc.get("x-dialects", {}).values():
        found |= {(r["method"].upper(), r["path"]) for r in dialect["routes"]}
    return sorted(found, key=lambda mp: (bool(ENDS_CALL.search(mp[1])) or mp[0] == "DELETE", mp))


async def raw_request(r: Running, data: bytes) -> int | None:
    host, port = r.server.http_address  # type: ignore[misc]
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
    except (ConnectionError, TimeoutError):
        return None
    finally:
        writer.close()
    m = re.match(rb"HTTP/1\.[01] (\d{3})", line)
    return int(m.group(1)) if m else None


async def test_no_route_answers_5xx_or_logs_a_traceback(tmp_path: Path) -> None:
    collect = Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collect)
    root.setLevel(logging.DEBUG)
    r = await start_server(tmp_path, telnyx_api_key=TELNYX_KEY, plivo_auth_id=PLIVO_ID, plivo_auth_token=PLIVO_TOKEN,
                           acs_access_key=ACS_KEY, bandwidth_username="u", bandwidth_password="p",
                           bandwidth_account_id=ACCOUNT)
    problems: list[str] = []
    sent = 0
    parser_refusals = 0
    sipp: asyncio.Task[tuple[int, str]] | None = None
    try:
        sipp = await start_sipp([f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / "uac_wait_bye.xml"),
                                 "-i", "127.0.0.1", "-p", "0", "-mp", str(free_port_pair()), "-m", "1",
                                 "-timeout", "60s", "-timeout_error"])
        call_id = (await answered_calls(r, 1))[0].call_id
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{r.http}/openapi.json") as resp:
                doc = await resp.json()
            table = routes(doc)
            assert len(table) >= 30, table

            async def send(method: str, path: str, what: str, **kw: Any) -> None:
                nonlocal sent
                sent += 1
                timeout = aiohttp.ClientTimeout(total=10)
                try:
                    async with s.request(method, f"{r.http}{path}", timeout=timeout, **kw) as resp:
                        raw = await resp.read() if "event-stream" not in resp.headers.get("Content-Type", "") else b""
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    problems.append(f"{method} {path} [{what}]: {type(exc).__name__}: {exc}")
                    return
                if status >= 500:
                    problems.append(f"{method} {path} [{what}]: HTTP {status} {raw[:200]!r}")
                elif status >= 400 and raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = None
                    if not error_shape_ok(path, status, body):
                        problems.append(f"{method} {path} [{what}]: {status} not in the API's error shape: {raw[:200]!r}")

            for method, template in table:
                for target in ({call_id, "nope"} if not ENDS_CALL.search(template) and method != "DELETE"
                               else {"nope"}):
                    path = fill(template, target)
                    for i, headers in enumerate(HEADERS):
                        await send(method, path, f"headers {i}", headers=headers, data=b"{}" if method in (
                            "POST", "PUT") else None)
                    if method in ("POST", "PUT"):
                        url = f"{r.http}{path}"
                        for label, body in BODIES:
                            await send(method, path, label, data=body,
                                       headers={**auth_for(method, url, path, body), "Content-Type": "application/json"})
                        for ctype in CONTENT_TYPES:
                            body = b"\xff{\"urls\": 1}"
                            await send(method, path, f"content-type {ctype!r}", data=body,
                                       headers={**auth_for(method, url, path, body), "Content-Type": ctype})
                        big = b"{\"a\": \"" + b"x" * (3 << 20) + b"\"}"
                        await send(method, path, "too large", data=big,
                                   headers={**auth_for(method, url, path, big), "Content-Type": "application/json"})
            for data in RAW:
                sent += 1
                status = await raw_request(r, data)
                if status is not None and status >= 500:
                    problems.append(f"raw {data[:60]!r}: HTTP {status}")
            # the reproducer: multipart without a boundary is a 400 in the native shape
            async with s.put(f"{r.http}/v1/media/x.wav", data=b"abcd",
                             headers={"Content-Type": "multipart/form-data"}) as resp:
                assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_multipart"
            # the server is still fine: the live call answers, the API answers
            async with s.get(f"{r.http}/v1/calls/{call_id}") as resp:
                assert resp.status == 200
            async with s.delete(f"{r.http}/v1/calls/{call_id}") as resp:
                assert resp.status < 300
            parser_refusals = r.server.bad_requests.refused
        code, out = await sipp
        assert code == 0, out[-2000:]
    finally:
        await r.server.stop()  # hangs up the call if the test failed halfway: SIPp then ends too
        if sipp is not None and not sipp.done():
            await asyncio.wait([sipp], timeout=30)
        root.removeHandler(collect)
        root.setLevel(old_level)
    print(f"{sent} malformed requests over {len(table)} routes")
    assert problems == [], "\n".join(problems[:60])
    assert collect.tracebacks() == [], "\n".join(collect.tracebacks()[:20])
    # hundreds of refusals from one source cost a handful of log lines (rate-limited per source)
    assert parser_refusals >= 10
    lines = [rec for rec in collect.records if rec.name == "aiohttp.server" or "refused" in rec.getMessage()]
    assert len(lines) <= 15, [rec.getMessage()[:120] for rec in lines]
