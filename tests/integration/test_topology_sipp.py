"""Outbound calls, digest authentication, CANCEL, early media, bridges and rooms against real SIPp peers.

The server dials SIPp UASes through ``POST /v1/calls``; SIPp UACs dial in.  Every outcome is what a
real peer saw or what the API and the webhooks reported (signaling and topology state only: what
bridged legs hear is the mixer's test).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mediasrv.rtp.probe import open_capture
from tests.support.paths import SCENARIOS
from tests.support.ports import free_tcp_udp_port
from tests.support.server import Hooks, Running, start_server, wait_until
from tests.support.sipp import run_sipp

pytestmark = pytest.mark.integration


async def api(r: Running, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.request(method, f"{r.http}{path}", json=body) as resp:
        return resp.status, await resp.json()


async def uas(scenario: str, *extra: str, calls: int = 1, timeout_s: int = 30) -> tuple[int, asyncio.Task[tuple[int, str]]]:
    """Start a SIPp UAS on a free port; returns (port, task giving (exit code, output))."""
    port = free_tcp_udp_port()
    args = ["-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port), "-m", str(calls),
            "-timeout", f"{timeout_s}s", *extra]
    task = asyncio.create_task(run_sipp(*args, timeout=timeout_s + 15))
    await asyncio.sleep(0.4)  # let it bind
    return port, task


async def sipp_ok(task: asyncio.Task[tuple[int, str]], calls: int = 1) -> str:
    code, out = await task
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", out)
    assert code == 0 and ok and failed and (int(ok[-1]), int(failed[-1])) == (calls, 0), out[-3000:]
    return out


async def dial(r: Running, port: int, **body: Any) -> dict[str, Any]:
    status, call = await api(r, "POST", "/v1/calls", {"to": f"sip:svc@127.0.0.1:{port}", **body})
    assert status == 201, call
    assert call["state"] == "initiated" and call["direction"] == "outbound"
    return call


def hangup_event(hooks: Hooks, call_id: str) -> Any:
    return hooks.wait_for(lambda e: e["call_id"] == call_id and e["type"] == "call.hangup", 15)


def state(r: Running, call_id: str) -> str:
    call = r.server.registry.get(call_id)
    assert call is not None
    return call.state.value


# -- outbound calls ---------------------------------------------------------------------------------


async def test_outbound_call_answered_then_hung_up_by_either_side(running: Running, webhooks: Hooks) -> None:
    r = running
    port_a, sipp_a = await uas("uas_answer.xml")
    port_b, sipp_b = await uas("uas_bye.xml", "-d", "500", "-t", "t1")  # over TCP
    a = await dial(r, port_a, **{"from": "sip:robot@127.0.0.1"})
    b = await dial(r, port_b, to=f"sip:svc@127.0.0.1:{port_b};transport=tcp")
    await wait_until(lambda: state(r, a["call_id"]) == "answered", 10, "call a answered")
    status, body = await api(r, "GET", f"/v1/calls/{a['call_id']}")
    assert status == 200 and body["state"] == "answered" and body["codec"] == "PCMU"
    assert body["from"] == "sip:robot@127.0.0.1" and body["room_id"] is None and body["peers"] == []
    status, _ = await api(r, "DELETE", f"/v1/calls/{a['call_id']}")
    assert status == 200
    ended_a = (await hangup_event(webhooks, a["call_id"]))["data"]
    assert (ended_a["hangup_cause"], ended_a["hangup_by"]) == ("normal_clearing", "api")
    ended_b = (await hangup_event(webhooks, b["call_id"]))["data"]
    assert (ended_b["hangup_cause"], ended_b["hangup_by"]) == ("normal_clearing", "callee")
    await sipp_ok(sipp_a)
    await sipp_ok(sipp_b)
    assert webhooks.of(a["call_id"]) == ["call.initiated", "call.ringing", "call.answered", "call.hangup"]
    assert webhooks.of(b["call_id"]) == ["call.initiated", "call.answered", "call.hangup"]


async def test_custom_headers_reach_the_callee(running: Running, webhooks: Hooks) -> None:
    port, sipp = await uas("uas_headers.xml")  # fails the call unless both headers arrive as sent
    call = await dial(running, port, headers={"X-Tenant": "acme", "X-Account-Id": "42"},
                      to=f"sip:svc@localhost:{port}")  # a host name: resolved by the API
    assert call["to"] == f"sip:svc@localhost:{port}"
    await webhooks.wait_for(lambda e: e["call_id"] == call["call_id"] and e["type"] == "call.answered")
    await api(running, "DELETE", f"/v1/calls/{call['call_id']}")
    await sipp_ok(sipp)


async def test_outbound_request_validation(running: Running) -> None:
    r = running
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({}, 400, "missing_field"),
        ({"to": "not a uri"}, 400, "invalid_field"),
        ({"to": "sips:a@127.0.0.1"}, 422, "unsupported"),
        ({"to": "tel:+15551234"}, 422, "unsupported"),
        ({"to": "sip:a@127.0.0.1;transport=sctp"}, 422, "unsupported"),
        ({"to": "sip:a@127.0.0.1", "headers": {"X-Evil": "a\r\nVia: x"}}, 422, "invalid_header"),
        ({"to": "sip:a@127.0.0.1", "headers": {"Call-ID": "mine"}}, 422, "invalid_header"),
        ({"to": "sip:a@127.0.0.1", "headers": ["X-A"]}, 400, "invalid_field"),
        ({"to": "sip:a@127.0.0.1", "timeout_s": 0}, 422, "out_of_range"),
        ({"to": "sip:a@127.0.0.1", "timeout_s": "soon"}, 400, "invalid_field"),
        ({"to": "sip:a@127.0.0.1", "from": "mailto:x@y"}, 400, "invalid_field"),
        ({"to": "sip:a@127.0.0.1", "auth": {"password": "x"}}, 400, "invalid_field"),
    ]
    for body, status, code in cases:
        got, err = await api(r, "POST", "/v1/calls", body)
        assert (got, err["error"]["code"]) == (status, code), (body, err)
    assert r.server.registry.active_count == 0


@pytest.mark.parametrize(("scenario", "code", "cause"), [("uas_busy.xml", 486, "busy"), ("uas_decline.xml", 603, "declined")])
async def test_rejected_outbound_call_has_cause_and_sip_code(
    running: Running, webhooks: Hooks, scenario: str, code: int, cause: str
) -> None:
    port, sipp = await uas(scenario)
    call = await dial(running, port)
    data = (await hangup_event(webhooks, call["call_id"]))["data"]
    assert (data["hangup_cause"], data["hangup_by"], data["sip_code"]) == (cause, "callee", code)
    await sipp_ok(sipp)


async def test_cancel_before_answer_and_no_answer_timeout(running: Running, webhooks: Hooks) -> None:
    r = running
    port, sipp = await uas("uas_ring.xml", calls=2)
    first = await dial(r, port)
    await webhooks.wait_for(lambda e: e["call_id"] == first["call_id"] and e["type"] == "call.ringing")
    status, body = await api(r, "DELETE", f"/v1/calls/{first['call_id']}")
    assert status == 200
    data = (await hangup_event(webhooks, first["call_id"]))["data"]
    assert (data["hangup_cause"], data["hangup_by"], data["sip_code"]) == ("cancelled", "api", 487)
    t0 = asyncio.get_running_loop().time()
    second = await dial(r, port, timeout_s=1)
    data = (await hangup_event(webhooks, second["call_id"]))["data"]
    assert (data["hangup_cause"], data["hangup_by"]) == ("no_answer", "server")
    assert 0.9 < asyncio.get_running_loop().time() - t0 < 3
    await sipp_ok(sipp, calls=2)  # SIPp saw CANCEL, 200, 487, ACK for both
    assert webhooks.of(first["call_id"]) == ["call.initiated", "call.ringing", "call.hangup"]
    # nobody there at all: INVITE retransmitted until timeout_s, cause "timeout"
    silent = await dial(r, free_tcp_udp_port(), timeout_s=1)
    data = (await hangup_event(webhooks, silent["call_id"]))["data"]
    assert (data["hangup_cause"], data["hangup_by"], data["sip_code"]) == ("timeout", "server", 408)


# -- digest authentication ---------------------------------------------------------------------------


async def test_digest_401_configured_credentials_and_wrong_password(tmp_path: Path, webhooks: Hooks) -> None:
    r = await start_server(tmp_path, webhook_url=webhooks.url, sip_username="alice", sip_password="s3cret")
    try:
        port, sipp = await uas("uas_auth.xml", "-set", "user", "alice", "-set", "pass", "s3cret", calls=2)
        good = await dial(r, port)  # credentials from Settings.sip_username / sip_password
        await webhooks.wait_for(lambda e: e["call_id"] == good["call_id"] and e["type"] == "call.answered")
        await api(r, "DELETE", f"/v1/calls/{good['call_id']}")
        bad = await dial(r, port, auth={"username": "alice", "password": "wrong"})  # per-request credentials
        data = (await hangup_event(webhooks, bad["call_id"]))["data"]
        assert (data["hangup_cause"], data["hangup_by"], data["sip_code"]) == ("auth_failed", "callee", 401)
        await sipp_ok(sipp, calls=2)
        assert webhooks.of(bad["call_id"]) == ["call.initiated", "call.hangup"]
    finally:
        await r.server.stop()


async def test_challenged_bye_is_answered_with_credentials(running: Running, webhooks: Hooks) -> None:
    port, sipp = await uas("uas_bye_auth.xml", "-set", "user", "carol", "-set", "pass", "byepass")
    call = await dial(running, port, auth={"username": "carol", "password": "byepass"})
    await webhooks.wait_for(lambda e: e["call_id"] == call["call_id"] and e["type"] == "call.answered")
    await api(running, "DELETE", f"/v1/calls/{call['call_id']}")
    await sipp_ok(sipp)  # the call fails in SIPp unless the second BYE passed <verifyauth>


def _auth_params(value: str) -> dict[str, str]:
    return {m[0].lower(): m[1] if m[1] else m[2] for m in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)}


@pytest.mark.parametrize("alg", ["MD5", "SHA-256"])
async def test_digest_407_proxy_challenge(running: Running, webhooks: Hooks, tmp_path: Path, alg: str) -> None:
    trace = tmp_path / "proxy_auth.log"
    port, sipp = await uas("uas_proxy_auth.xml", "-set", "alg", alg, "-trace_msg", "-message_file", str(trace))
    call = await dial(running, port, auth={"username": "bob", "password": "pr0xy pass"})
    await webhooks.wait_for(lambda e: e["call_id"] == call["call_id"] and e["type"] == "call.answered")
    await api(running, "DELETE", f"/v1/calls/{call['call_id']}")
    await sipp_ok(sipp)
    # recompute the digest of the retried INVITE as SIPp received it, straight from RFC 7616 3.4.1
    log = trace.read_text(errors="replace")
    invites = re.findall(r"^INVITE (\S+) SIP/2\.0\r?\n(.*?)\r?\n\r?\n", log, re.M | re.S)
    assert len(invites) == 2 and "Proxy-Authorization" not in invites[0][1]
    uri, head = invites[1]
    value = re.search(r"^Proxy-Authorization:\s*Digest (.*)$", head, re.M | re.I)
    assert value is not None
    p = _auth_params(value.group(1).strip())
    h = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}[alg]

    def hx(s: str) -> str:
        return h(s.encode()).hexdigest()

    ha1, ha2 = hx("bob:proxy.test:pr0xy pass"), hx(f"INVITE:{uri}")
    expected = hx(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}")
    assert (p["username"], p["realm"], p["uri"], p["qop"], p["nc"], p["algorithm"]) == (
        "bob", "proxy.test", uri, "auth", "00000001", alg)
    assert p["response"] == expected
    cseqs = [int(c) for c in re.findall(r"^CSeq:\s*(\d+) INVITE", log, re.M)]
    assert cseqs[0] + 1 in cseqs  # the retry has the next CSeq


# -- early media --------------------------------------------------------------------------------------


async def test_183_with_sdp_starts_rtp_before_the_answer(running: Running, webhooks: Hooks) -> None:
    r = running
    capture = await open_capture()
    try:
        port, sipp = await uas("uas_early_media.xml", "-set", "rtp_ip", "127.0.0.1",
                               "-set", "rtp_port", str(capture.port), "-d", "1500")
        call = await dial(r, port)
        cid = call["call_id"]
        await webhooks.wait_for(lambda e: e["call_id"] == cid and e["type"] == "call.early_media")
        # RTP (PCMA, as the 183 chose) arrives while the call is still unanswered
        await wait_until(lambda: len(capture.packets) >= 10, 5, "early RTP")
        assert state(r, cid) == "ringing"
        assert {p.pt for p in capture.packets} == {8}
        answered = await webhooks.wait_for(lambda e: e["call_id"] == cid and e["type"] == "call.answered")
        assert answered["data"]["codec"] == "PCMA"
        before = len(capture.packets)
        await wait_until(lambda: len(capture.packets) >= before + 10, 5, "RTP after the answer")
        assert len({p.ssrc for p in capture.packets}) == 1  # one stream, continued through the answer
        await api(r, "DELETE", f"/v1/calls/{cid}")
        await sipp_ok(sipp)
        assert webhooks.of(cid)[:4] == ["call.initiated", "call.ringing", "call.early_media", "call.answered"]
    finally:
        capture.close()


# -- bridges and rooms ----------------------------------------------------------------------------------


def uac(r: Running, scenario: str, *extra: str, calls: int = 1) -> asyncio.Task[tuple[int, str]]:
    args = [f"127.0.0.1:{r.sip_port}", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", "0",
            "-m", str(calls), "-l", str(calls), "-r", "20", "-timeout", "40s", "-timeout_error", *extra]
    return asyncio.create_task(run_sipp(*args, timeout=55))


async def inbound_answered(r: Running, n: int) -> list[str]:
    calls = await wait_until(
        lambda: (cs := [c for c in r.server.registry.active() if c.direction.value == "inbound"
                        and c.state.value == "answered"]) and len(cs) >= n and cs, 10, f"{n} inbound calls")
    return [c.call_id for c in calls]


async def test_bridge_inbound_with_outbound_and_callee_hangs_up(running: Running, webhooks: Hooks) -> None:
    r = running
    caller_sipp = uac(r, "uac_wait_bye.xml")  # dials in, waits for our BYE
    port_c, ringing_sipp = await uas("uas_ring.xml")
    (a,) = await inbound_answered(r, 1)
    c = (await dial(r, port_c))["call_id"]
    await wait_until(lambda: state(r, c) == "ringing", 10, "c ringing")

    # refusals first: self, unknown, unanswered, missing field
    for target, status, code in [(a, 409, "bridge_self"), ("v3:x:nope", 404, "call_not_found"),
                                 (c, 409, "call_not_answered")]:
        got, err = await api(r, "POST", f"/v1/calls/{a}/bridge", {"call_id": target})
        assert (got, err["error"]["code"]) == (status, code)
    got, err = await api(r, "POST", f"/v1/calls/{a}/bridge", {})
    assert (got, err["error"]["code"]) == (400, "missing_field")
    got, err = await api(r, "POST", "/v1/calls/v3:x:nope/bridge", {"call_id": a})
    assert got == 404
    got, err = await api(r, "POST", f"/v1/calls/{a}/unbridge")
    assert (got, err["error"]["code"]) == (409, "not_bridged")
    await api(r, "DELETE", f"/v1/calls/{c}")  # cancel the ringing one

    port_b, callee_sipp = await uas("uas_bye.xml", "-d", "3000")  # answers, hangs up 3 s later
    b = (await dial(r, port_b))["call_id"]
    await wait_until(lambda: state(r, b) == "answered", 10, "b answered")
    status, room = await api(r, "POST", f"/v1/calls/{a}/bridge", {"call_id": b})
    assert status == 200 and room["kind"] == "bridge" and room["members"] == [a, b]
    rid = room["room_id"]
    _, call_a = await api(r, "GET", f"/v1/calls/{a}")
    _, call_b = await api(r, "GET", f"/v1/calls/{b}")
    assert (call_a["room_id"], call_a["peers"]) == (rid, [b]) and (call_b["room_id"], call_b["peers"]) == (rid, [a])
    assert sorted(r.server.media.peers_of(a)) == [b]  # the media plane knows the same topology
    _, again = await api(r, "POST", f"/v1/calls/{b}/bridge", {"call_id": a})  # idempotent
    assert again["room_id"] == rid and again["members"] == [a, b]
    for x, peer in ((a, b), (b, a)):
        ev = await webhooks.wait_for(lambda e, x=x: e["call_id"] == x and e["type"] == "call.bridged")
        assert ev["data"]["room_id"] == rid and ev["data"]["peers"] == [peer]

    # the callee hangs up: b ends, a stays up, out of the dissolved bridge
    await hangup_event(webhooks, b)
    ev = await webhooks.wait_for(lambda e: e["call_id"] == a and e["type"] == "call.unbridged")
    assert ev["data"]["peers"] == [b] and ev["data"]["reason"] == "bridge_ended"
    _, call_a = await api(r, "GET", f"/v1/calls/{a}")
    assert call_a["state"] == "answered" and call_a["room_id"] is None and call_a["peers"] == []
    assert r.server.media.peers_of(a) == []
    got, _ = await api(r, "GET", f"/v1/rooms/{rid}")
    assert got == 404
    got, err = await api(r, "POST", f"/v1/calls/{a}/bridge", {"call_id": b})  # b has ended
    assert (got, err["error"]["code"]) == (409, "call_ended")
    await api(r, "DELETE", f"/v1/calls/{a}")
    await sipp_ok(callee_sipp)
    await sipp_ok(ringing_sipp)
    code, out = await caller_sipp
    assert code == 0, out[-2000:]


async def test_rooms_api_three_parties(running: Running, webhooks: Hooks) -> None:
    r = running
    callers = uac(r, "uac_wait_bye.xml", calls=4)
    a, b, c, d = await inbound_answered(r, 4)
    status, room = await api(r, "POST", "/v1/rooms")
    assert status == 201 and room["kind"] == "conference" and room["members"] == []
    rid = room["room_id"]
    for x in (a, b, c):
        status, room = await api(r, "POST", f"/v1/rooms/{rid}/join", {"call_id": x})
        assert status == 200
    assert room["members"] == [a, b, c] and [m["call_id"] for m in room["calls"]] == [a, b, c]
    _, call_b = await api(r, "GET", f"/v1/calls/{b}")
    assert call_b["room_id"] == rid and sorted(call_b["peers"]) == sorted([a, c])
    assert sorted(r.server.media.peers_of(c)) == sorted([a, b])

    # refusals
    status, other = await api(r, "POST", "/v1/rooms")
    cases = [
        ("POST", f"/v1/rooms/{other['room_id']}/join", {"call_id": a}, 409, "already_in_room"),
        ("POST", f"/v1/rooms/{rid}/join", {"call_id": "v3:x:nope"}, 404, "call_not_found"),
        ("POST", "/v1/rooms/r3:x:nope/join", {"call_id": d}, 404, "room_not_found"),
        ("POST", f"/v1/rooms/{rid}/leave", {"call_id": d}, 409, "not_in_room"),
        ("POST", f"/v1/calls/{d}/bridge", {"call_id": a}, 200, None),  # d joins a's room
    ]
    for method, path, body, want, code in cases:
        got, err = await api(r, method, path, body)
        assert got == want and (code is None or err["error"]["code"] == code), (path, err)
    _, listed = await api(r, "GET", "/v1/rooms")
    assert {x["room_id"]: len(x["members"]) for x in listed["rooms"]} == {rid: 4, other["room_id"]: 0}

    # d leaves by API, then c hangs up: the others stay in the room
    status, room = await api(r, "POST", f"/v1/rooms/{rid}/leave", {"call_id": d})
    assert status == 200 and room["members"] == [a, b, c]
    await api(r, "DELETE", f"/v1/calls/{c}")
    await hangup_event(webhooks, c)
    _, room = await api(r, "GET", f"/v1/rooms/{rid}")
    assert room["members"] == [a, b]
    _, call_a = await api(r, "GET", f"/v1/calls/{a}")
    assert call_a["peers"] == [b] and call_a["state"] == "answered"
    left = await webhooks.wait_for(lambda e: e["call_id"] == c and e["type"] == "call.unbridged")
    assert left["data"]["reason"] == "hangup" and sorted(left["data"]["peers"]) == sorted([a, b])

    # deleting the room unbridges everyone and leaves the calls up
    status, _ = await api(r, "DELETE", f"/v1/rooms/{rid}")
    assert status == 200
    for x in (a, b):
        _, call = await api(r, "GET", f"/v1/calls/{x}")
        assert call["state"] == "answered" and call["room_id"] is None and call["peers"] == []
        ev = await webhooks.wait_for(lambda e, x=x: e["call_id"] == x and e["type"] == "call.unbridged")
        assert ev["data"]["reason"] == "room_deleted"
    got, _ = await api(r, "GET", f"/v1/rooms/{rid}")
    assert got == 404
    for x in (a, b, d):
        await api(r, "DELETE", f"/v1/calls/{x}")
    code, out = await callers
    assert code == 0, out[-2000:]
