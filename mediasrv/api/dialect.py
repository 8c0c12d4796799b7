"""How a vendor dialect plugs in: one :class:`Dialect` per vendor, mounted in one place.

A dialect is a sub-application in all but the aiohttp object: its routes all live under its
own path prefix, run behind its own middleware chain (its auth, then its error shape; the
native token and the native error shape never reach them), and it joins the event bus and
the call lifecycle only through the hooks listed here, registered by :func:`mount`.

Why not ``web.Application.add_subapp``: a sub-application's routes are hidden behind one
prefix resource of the root router, while the server's own route listing (the OpenAPI
``x-dialects`` check, ``/openapi.json`` consumers, the tests) reads every served path from the
root router.  Mounting each route on the root with the dialect's middleware chain wrapped
around it keeps the paths visible and behaves as a sub-application does.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from aiohttp import web

from ..calls.commands import CommandError
from .auth import is_dialect_path
from .openapi import OPENAPI

if TYPE_CHECKING:
    from ..calls.registry import Call
    from ..events.bus import Event, WebhookSink
    from ..nodeview import Node

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
EventHook = Callable[["Event"], None]
CallHook = Callable[[str, "Call"], None]  # (call.initiated | call.ringing | call.answered | call.hangup ..., call)


@dataclass
class Dialect:
    """One vendor dialect: where it lives, how it guards its routes, what it listens to."""

    name: str
    prefix: str  # every path it serves starts here (also listed in auth.DIALECT_PREFIXES)
    middlewares: list[Middleware]  # outermost first: error shape, then auth
    routes: list[web.RouteDef] = field(default_factory=list)
    on_event: list[EventHook] = field(default_factory=list)  # every event on the bus, as it is published
    on_call: list[CallHook] = field(default_factory=list)  # call lifecycle changes from the registry
    sinks: list[WebhookSink] = field(default_factory=list)  # webhook renderers delivered by the bus
    on_cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    openapi: dict[str, Any] | None = None  # its entry under /openapi.json "x-dialects"

    def add_routes(self, routes: list[web.RouteDef]) -> None:
        """Routes are matched in the order added: a dialect's catch-all goes last."""
        for route in routes:
            if not route.path.startswith(self.prefix):
                raise ValueError(f"{self.name} route {route.path} is outside its prefix {self.prefix}")
        self.routes += routes

    def guarded(self, handler: Handler) -> Handler:
        """*handler* behind this dialect's middleware chain (as aiohttp applies an app's middlewares)."""
        for middleware in reversed(self.middlewares):
            handler = _bind(middleware, handler)
        return handler


def _bind(middleware: Middleware, handler: Handler) -> Handler:
    async def bound(request: web.Request) -> web.StreamResponse:
        return await middleware(request, handler)

    return bound


class VendorError(Protocol):
    def to_response(self) -> web.Response: ...


def error_shape(own: type[Exception], from_command: Callable[[CommandError], VendorError]) -> Middleware:
    """The dialect's error middleware: its own error type, and the command service's domain errors, as
    responses in its vendor's shape (anything else is a bug: it goes on to the server's 500 handling)."""

    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except CommandError as exc:
            return from_command(exc).to_response()
        except own as exc:
            return cast(VendorError, exc).to_response()

    return errors


DIALECTS_KEY: web.AppKey[dict[str, Dialect]] = web.AppKey("dialects", dict)


def mount(app: web.Application, server: Node, dialect: Dialect) -> None:
    """The one place a dialect joins the server: routes, bus hooks, call hooks, sinks, cleanup."""
    if not is_dialect_path(dialect.prefix):
        raise ValueError(f"dialect prefix {dialect.prefix} is not in auth.DIALECT_PREFIXES: the native token "
                         "would guard it")
    for route in dialect.routes:  # registered as the RouteDef would be (GET also answers HEAD)
        web.RouteDef(route.method, route.path, dialect.guarded(route.handler), route.kwargs).register(app.router)
    for hook in dialect.on_event:
        server.events.add_listener(hook)
    for call_hook in dialect.on_call:
        server.registry.subscribe(call_hook)
    for sink in dialect.sinks:
        server.events.add_sink(sink)
    for cleanup in dialect.on_cleanup:
        app.on_cleanup.append(functools.partial(_cleanup, cleanup))
    if dialect.openapi is not None:
        OPENAPI.setdefault("x-dialects", {})[dialect.name] = dialect.openapi
    app.setdefault(DIALECTS_KEY, {})[dialect.name] = dialect


async def _cleanup(cleanup: Callable[[], Awaitable[None]], _app: web.Application) -> None:
    await cleanup()
