"""Shared fixtures for integration tests: a real server, a real audio origin, real webhook and vendor
callback receivers. The helpers behind them live in tests/support/ (test modules import from there,
never from each other or from this file).

A test module that defines a fixture of the same name (e.g. its own ``origin`` or ``hooks``) overrides
the one here, as pytest does for any conftest fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.acs import AcsEvents
from tests.support.bandwidth import Origin
from tests.support.plivo import Callbacks
from tests.support.server import AudioOrigin, Hooks, Running, receiver, start_server
from tests.support.telnyx import SignedHooks


@pytest.fixture
async def audio_origin() -> AsyncIterator[AudioOrigin]:
    origin = AudioOrigin(base="")
    async with receiver("GET", "/{name}", origin.serve) as origin.base:
        yield origin


@pytest.fixture
async def webhooks() -> AsyncIterator[Hooks]:
    hooks = Hooks()
    async with receiver("POST", "/hook", hooks.receive) as base:
        hooks.url = f"{base}/hook"
        yield hooks


@pytest.fixture
async def running(tmp_path: Path, webhooks: Hooks) -> AsyncIterator[Running]:
    r = await start_server(tmp_path, webhook_url=webhooks.url)
    yield r
    await r.server.stop()


@pytest.fixture
async def acs_events() -> AsyncIterator[AcsEvents]:
    """ACS callbacks (JSON arrays of CloudEvents, with their JWTs)."""
    rec = AcsEvents()
    async with receiver("POST", "/acs/events", rec.receive) as base:
        rec.url = f"{base}/acs/events"
        yield rec


@pytest.fixture
async def hooks() -> AsyncIterator[SignedHooks]:
    """Telnyx webhooks with their raw bodies and signature headers."""
    h = SignedHooks()
    async with receiver("POST", "/telnyx", h.receive) as base:
        h.url = f"{base}/telnyx"
        yield h


@pytest.fixture
async def callbacks() -> AsyncIterator[Callbacks]:
    """Plivo callbacks (any method) with their V3 signature headers."""
    cb = Callbacks()
    async with receiver("*", "/plivo/cb", cb.receive) as base:
        cb.url = f"{base}/plivo/cb"
        yield cb


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    """Bandwidth's audio and BXML origin, recording every request."""
    o = Origin()
    async with receiver("*", "/{name:.+}", o.serve) as o.base:
        yield o
