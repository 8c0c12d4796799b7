"""Wires the Bandwidth dialect: its core (bandwidth.py) and its DTMF extension (bandwidth_dtmf.py).

A module of its own so that neither imports the other's wiring: bandwidth_dtmf.py builds on
bandwidth.py (and registers <SendDtmf>, <Gather> in its EXTRA_VERBS on import), and
bandwidth.py knows nothing of bandwidth_dtmf.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from . import bandwidth_dtmf
from .bandwidth import (
    BANDWIDTH_KEY,
    OPENAPI_DIALECT,
    TOKEN_PATH,
    BandwidthDialect,
    BandwidthError,
    bandwidth_error,
    log,
)
from .dialect import Dialect, error_shape, mount

if TYPE_CHECKING:
    from ..nodeview import Node


def setup(app: web.Application, server: Node) -> None:
    dialect = BandwidthDialect(server)
    app[BANDWIDTH_KEY] = dialect
    if not dialect.enabled:
        log.info("Bandwidth dialect disabled: set MEDIASRV_BANDWIDTH_USERNAME and MEDIASRV_BANDWIDTH_PASSWORD")
    unit = Dialect("bandwidth", "/api/v2/", [error_shape(BandwidthError, bandwidth_error), dialect.auth],
                   on_call=[dialect.on_call], on_event=[dialect.on_event, bandwidth_dtmf.listener(dialect)],
                   on_cleanup=[dialect.close], openapi=OPENAPI_DIALECT)
    base = "/api/v2/accounts/{account_id}/calls/{call_id}"
    unit.add_routes([
        web.put(base + "/bxml", dialect.update_bxml),
        web.post(base, dialect.update_call),
        web.post(TOKEN_PATH, dialect.token),
        web.route("*", "/api/v2/{tail:.*}", dialect.fallback),
    ])
    mount(app, server, unit)
