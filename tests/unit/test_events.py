"""EventBus: webhooks arrive in order per call, are retried, and never block the publisher."""

import asyncio
import json

from aiohttp import web

from mediasrv.egress import Egress, EgressSettings
from mediasrv.events.bus import EventBus, WebhookSettings


async def _receiver(fail_first: int = 0):
    got: list[dict] = []
    attempts = {"n": 0}

    async def hook(request: web.Request) -> web.Response:
        attempts["n"] += 1
        if attempts["n"] <= fail_first:
            return web.Response(status=503)
        got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/hook", got, attempts


async def test_webhooks_in_order_per_call():
    runner, url, got, _ = await _receiver()
    bus = EventBus(WebhookSettings(url=url))
    for i in range(20):
        bus.publish("playback.started", f"call-{i % 2}", {"n": i})
    await bus.drain()
    await bus.close()
    await runner.cleanup()
    assert len(got) == 20
    for call in ("call-0", "call-1"):
        ns = [e["data"]["n"] for e in got if e["call_id"] == call]
        assert ns == sorted(ns)
    assert all({"type", "call_id", "data", "id", "seq", "occurred_at"} <= set(e) for e in got)


async def test_webhook_retried_after_5xx():
    runner, url, got, attempts = await _receiver(fail_first=2)
    bus = EventBus(WebhookSettings(url=url, backoff_s=0.01))
    bus.publish("call.answered", "c", {})
    await bus.drain()
    await bus.close()
    await runner.cleanup()
    assert attempts["n"] == 3 and len(got) == 1
    assert bus.stats["delivered"] == 1


async def test_unreachable_webhook_does_not_block_publish():
    bus = EventBus(WebhookSettings(url="http://127.0.0.1:9/none", max_attempts=2, backoff_s=0.01, timeout_s=0.5))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(100):
        bus.publish("call.hangup", "c", {})
    assert loop.time() - t0 < 0.5  # publishing only queues
    await bus.drain(timeout=10)
    await bus.close()
    assert bus.stats["delivery_failed"] >= 1


async def test_sse_subscriber_gets_events():
    bus = EventBus()
    q = bus.subscribe()
    bus.publish("call.initiated", "x", {"a": 1})
    event = await asyncio.wait_for(q.get(), 1)
    assert event.type == "call.initiated" and event.data == {"a": 1}
    assert [e.type for e in bus.history("x")] == ["call.initiated"]


async def test_custom_sink_builds_each_attempt_and_keeps_order():
    """A dialect's sink: its own URL and body, headers made fresh per attempt (timestamped signatures)."""
    from mediasrv.events.bus import Delivery, WebhookSink

    runner, url, got, attempts = await _receiver(fail_first=1)
    seen_attempts: list[int] = []

    def render(event):
        if event.type == "skip.me":
            return None

        def build(attempt: int):
            seen_attempts.append(attempt)
            body = json.dumps({"kind": event.type, "n": event.data["n"], "attempt": attempt}).encode()
            return body, {"Content-Type": "application/json", "X-Sig": f"sig-{attempt}"}

        return Delivery(url=url, build=build, key=event.call_id, label=event.type)

    # a per-delivery URL on loopback: allowed only because this bus's webhook allow-list says so
    bus = EventBus(egress=Egress(EgressSettings(webhook_allow_cidrs=["127.0.0.0/8"])))
    sink = bus.add_sink(WebhookSink(render, WebhookSettings(backoff_s=0.01), name="vendor"))
    for i in range(5):
        bus.publish("a.b", "c1", {"n": i})
    bus.publish("skip.me", "c1", {"n": 99})
    await bus.drain()
    await bus.close()
    await runner.cleanup()
    assert [e["n"] for e in got] == [0, 1, 2, 3, 4]
    assert got[0]["attempt"] == 2 and seen_attempts[:2] == [1, 2]  # first try refused with 503, rebuilt
    assert sink.stats["delivered"] == 5 and bus.stats["delivered"] == 5
