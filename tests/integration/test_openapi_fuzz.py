"""Schemathesis against the live server's own /openapi.json: generated requests for every operation, no 5xx.

Bounded (14 s of generated requests shared by the operations, ~20 s with start-up) so it fits the default run; the HTTP
robustness walker (test_http_robustness.py) covers the dialect routes and malformed framing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.support.server import start_server

pytestmark = pytest.mark.integration

BUDGET_S = 14.0


def test_generated_requests_to_every_operation_never_get_a_5xx(tmp_path: Path) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    r = asyncio.run_coroutine_threadsafe(start_server(tmp_path), loop).result(30)
    failures: list[str] = []
    calls = 0
    try:
        doc = requests.get(f"{r.http}/openapi.json", timeout=5).json()
        schema = schemathesis.openapi.from_dict(doc)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        deadline = time.monotonic() + BUDGET_S
        for i, op in enumerate(operations):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            op_deadline = time.monotonic() + left / (len(operations) - i)

            @settings(max_examples=200, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def check(case: object) -> None:
                nonlocal calls
                if time.monotonic() > op_deadline:  # noqa: B023 - check() runs within this iteration
                    return
                calls += 1
                if case.path.endswith("/events") and case.method.upper() == "GET":  # type: ignore[attr-defined]
                    case.headers = {**(case.headers or {}), "Accept": "application/json"}  # type: ignore[attr-defined]
                resp = case.call(base_url=r.http, timeout=10)  # type: ignore[attr-defined]
                if resp.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path}: {resp.status_code} {resp.text[:200]}")  # type: ignore[attr-defined]

            check()
    finally:
        asyncio.run_coroutine_threadsafe(r.server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    print(f"schemathesis: {calls} generated requests over {len(operations)} operations")
    assert calls >= 100
    assert failures == [], "\n".join(failures[:30])
