"""A Dialect unit: its routes stay under its prefix, its middleware chain renders its own error shape,
and a bug (a KeyError) inside a handler is not turned into a vendor 4xx."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from mediasrv.api.common import BadLoop, basic_credentials, basic_matches, iso_z, parse_loop
from mediasrv.api.dialect import DIALECTS_KEY, Dialect, Handler, error_shape, mount
from mediasrv.calls.commands import CommandError, NoSuchCall
from mediasrv.config import Settings
from mediasrv.server import Server


class ShapeError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text

    def to_response(self) -> web.Response:
        return web.json_response({"oops": self.text}, status=self.status)


def from_command(exc: CommandError) -> ShapeError:
    return ShapeError(404 if isinstance(exc, NoSuchCall) else 409, exc.message)


async def deny_without_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.headers.get("X-Key") != "k":
        raise ShapeError(401, "who are you")
    return await handler(request)


def unit() -> Dialect:
    return Dialect("shape", "/v2/", [error_shape(ShapeError, from_command), deny_without_key])


async def _call(handler: Handler, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    resp = await handler(make_mocked_request("POST", "/v2/x", headers=headers))
    assert isinstance(resp, web.Response) and resp.text is not None
    return resp.status, json.loads(resp.text)


async def test_middleware_chain_renders_the_dialects_shape() -> None:
    async def no_call(request: web.Request) -> web.Response:
        raise NoSuchCall("v3:gone")

    guarded = unit().guarded(no_call)
    assert await _call(guarded, {}) == (401, {"oops": "who are you"})  # auth before the handler
    assert await _call(guarded, {"X-Key": "k"}) == (404, {"oops": "no call with id 'v3:gone'"})


async def test_a_bug_in_a_handler_is_not_a_vendor_error() -> None:
    async def buggy(request: web.Request) -> web.Response:
        return web.json_response({}[request.path])  # a KeyError that means nothing about calls

    with pytest.raises(KeyError):
        await unit().guarded(buggy)(make_mocked_request("POST", "/v2/x", headers={"X-Key": "k"}))


def test_routes_and_prefix_are_checked(tmp_path: Path) -> None:
    async def h(request: web.Request) -> web.Response:
        return web.Response()

    d = unit()
    with pytest.raises(ValueError, match="outside its prefix"):
        d.add_routes([web.get("/v1/calls", h)])
    server = Server(Settings(data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="DIALECT_PREFIXES"):
        mount(server.app, server, Dialect("stray", "/elsewhere/", []))
    assert set(server.app[DIALECTS_KEY]) == {"telnyx", "plivo", "acs", "bandwidth"}
    served = {getattr(r, "canonical", "") for r in server.app.router.resources()}
    for dialect in server.app[DIALECTS_KEY].values():  # every route on the root router, under its prefix
        paths = [re.sub(r"\{(\w+):[^}]*\}", r"{\1}", r.path) for r in dialect.routes]  # {tail:.*} → {tail}
        assert paths and all(p in served and p.startswith(dialect.prefix) for p in paths), dialect.name


def test_shared_helpers() -> None:
    assert [parse_loop(v) for v in (None, 3, "Infinity")] == [1, 3, None]
    assert parse_loop(" 7 ", digit_strings=True) == 7
    with pytest.raises(BadLoop) as wrong:
        parse_loop("7")
    assert not wrong.value.out_of_range
    with pytest.raises(BadLoop) as far:
        parse_loop(101)
    assert far.value.out_of_range
    assert basic_credentials("Basic dTpwOnE=") == ("u", "p:q")
    assert basic_credentials("Basic ***") is None and basic_credentials("Bearer x") is None
    assert basic_matches("Basic dTpwOnE=", "u", "p:q") and not basic_matches("Basic dTpwOnE=", "u", "p")
    assert iso_z(0.5) == "1970-01-01T00:00:00.500000Z" and iso_z(1.0, fraction=False) == "1970-01-01T00:00:01Z"
    assert iso_z(None) is None and iso_z(0, fraction=False) is None
