"""/metrics through prometheus_client, against a live SIPp call with a playback: families, values, auth."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.audio import chirp_signal, wav_bytes
from tests.support.ports import free_tcp_udp_port
from tests.support.server import hang_up_all, start_server, wait_until
from tests.support.sipp import answered_calls, sipp_caller, start_sipp

pytestmark = pytest.mark.integration

TOKEN, METRICS_TOKEN = "api-secret", "scrape-only"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_families_values_and_scrape_auth(tmp_path, audio_origin, webhooks):
    metrics_port = free_tcp_udp_port()
    r = await start_server(tmp_path, webhook_url=webhooks.url, api_token=TOKEN, metrics_token=METRICS_TOKEN,
                           metrics_listen=f"127.0.0.1:{metrics_port}")
    url = audio_origin.add("tone.wav", wav_bytes(chirp_signal(4.0), 8000))
    sipp = await start_sipp(sipp_caller(r))
    api = {"Authorization": f"Bearer {TOKEN}"}
    scrape = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    try:
        call = (await answered_calls(r, 1))[0]
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{r.http}/v1/calls/{call.call_id}/playbacks", json={"url": url}, headers=api) as resp:
                assert resp.status == 201, await resp.text()
            await wait_until(lambda: r.server.media.playing_legs == 1, 5, "playing")
            await wait_until(lambda: r.server.media.loader.load_time.count == 1, 5, "loaded")
            await webhooks.wait_for(lambda e: e["type"] == "playback.started")  # initiated, answered: counted
            async with s.get(f"{r.http}/metrics", headers=scrape) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                text = await resp.text()
            # the read-only token opens /metrics and nothing else; no token, nothing
            async with s.get(f"{r.http}/v1/calls", headers=scrape) as resp:
                assert resp.status == 401
            async with s.get(f"{r.http}/metrics") as resp:
                assert resp.status == 401
            async with s.get(f"http://127.0.0.1:{metrics_port}/metrics", headers=scrape) as resp:
                assert resp.status == 200 and "mediasrv_build_info{" in await resp.text()
            async with s.get(f"http://127.0.0.1:{metrics_port}/v1/calls", headers=scrape) as resp:
                assert resp.status == 404  # the metrics address serves /metrics only
            async with s.get(f"{r.http}/v1/calls/{call.call_id}/pacing", headers=api) as resp:
                pacing = await resp.json()
            async with s.get(f"{r.http}/v1/calls?limit=1", headers=api) as resp:
                listed = await resp.json()
                assert [c["call_id"] for c in listed["calls"]] == [call.call_id] and listed["total"] == 1
            for bad, status in (("0", 422), ("x", 400)):
                async with s.get(f"{r.http}/v1/calls?limit={bad}", headers=api) as resp:
                    assert resp.status == status and "limit" in (await resp.json())["error"]["message"]
            async with s.get(f"{r.http}/v1/calls/nope/pacing", headers=api) as resp:
                assert resp.status == 404 and (await resp.json())["error"]["code"] == "call_not_found"
            for junk in ("/no/such/path", "/v1/calls/x/y/z"):  # unmatched paths: one label, whatever was asked
                async with s.request("PURGE", f"{r.http}{junk}", headers=api) as resp:
                    assert resp.status in (404, 405)
            async with s.get(f"{r.http}/metrics", headers=scrape) as resp:
                later = samples(await resp.text())
        assert pacing["ptime_ms"] == 20 and pacing["pacing"], pacing
        assert all(row["max_lateness_ms"] >= 0 for row in pacing["pacing"])
        assert pacing["level_dbfs"] is not None and -30 < pacing["level_dbfs"] < 0, pacing

        families = list(text_string_to_metric_families(text))
        names = [f.name for f in families]
        assert len(names) == len(set(names)), "one family per name"
        assert not any("kind" in s.labels for f in families for s in f.samples), "no mixed 'kind' counters"
        got = samples(text)
        assert got[("mediasrv_active_calls", ())] == 1
        assert got[("mediasrv_calls", (("state", "answered"),))] == 1
        assert got[("mediasrv_playing_legs", ())] == 1 and got[("mediasrv_rtp_legs", ())] == 1
        assert got[("mediasrv_rtp_packets_sent_total", ())] > 0
        assert ("mediasrv_cache_bytes", (("tier", "disk"),)) in got
        assert got[("mediasrv_cache_limit_bytes", (("tier", "memory"),))] == r.server.settings.cache_bytes
        assert got[("mediasrv_source_fetches_total", ())] == 1
        assert got[("mediasrv_source_load_seconds_count", ())] == 1
        delivered = got[("mediasrv_webhook_delivery_seconds_count", (("result", "delivered"), ("sink", "webhook")))]
        assert delivered >= 2 and got[("mediasrv_webhooks_delivered_total", ())] >= delivered
        assert got[("mediasrv_sip_calls_in_total", ())] == 1
        assert got[("mediasrv_clock_tick_lateness_seconds_count", ())] > 0
        route = (("method", "POST"), ("route", "/v1/calls/{call_id}/playbacks"))
        assert got[("mediasrv_http_request_duration_seconds_count", route)] == 1
        routes = {dict(k[1])["route"] for k in later if k[0] == "mediasrv_http_request_duration_seconds_count"}
        assert "unmatched" in routes and "/v1/calls/{call_id}/pacing" in routes, routes
        assert not any("nope" in x or "no/such" in x for x in routes), routes
        assert got[("process_resident_memory_bytes", ())] > 0 and got[("process_open_fds", ())] > 0
        build = [k for k in got if k[0] == "mediasrv_build_info"]
        assert build and dict(build[0][1])["version"]
    finally:
        await hang_up_all(r)
        rc, out = await sipp
        await r.server.stop()
    assert rc == 0, out[-2000:]


async def test_metrics_listen_without_a_token(tmp_path):
    """metrics_listen alone: the scrape address needs no token while the API keeps its own."""
    port = free_tcp_udp_port()
    r = await start_server(tmp_path, api_token=TOKEN, metrics_listen=f"127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200 and "process_cpu_seconds_total" in await resp.text()
            async with s.get(f"{r.http}/metrics") as resp:
                assert resp.status == 401
    finally:
        await r.server.stop()
