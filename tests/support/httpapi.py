"""Small HTTP calls against a running server's API (JSON in, status and JSON out)."""

from __future__ import annotations

from typing import Any

import aiohttp

from .server import Running


async def api(r: Running, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.request(method, f"{r.http}{path}", json=body) as resp:
        return resp.status, await resp.json()


async def req(method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, url, **kw) as resp:
        try:
            return resp.status, await resp.json()
        except aiohttp.ContentTypeError:
            return resp.status, await resp.text()


async def post_play(r: Running, call_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(f"{r.http}/v1/calls/{call_id}/playbacks", json=body) as resp:
        return resp.status, await resp.json()


async def native_bridge(r: Running, a: str, b: str) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"{r.http}/v1/calls/{a}/bridge", json={"call_id": b}) as resp:
        assert resp.status == 200, await resp.text()
