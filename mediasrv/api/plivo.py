"""The plivo dialect: translates its requests to the internal model and events back (issue 6, being built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ..server import Server


def setup(app: web.Application, server: Server) -> None:
    """Register this dialect's routes and event listener on *app* (none yet: issue 6 in progress)."""
    return None
