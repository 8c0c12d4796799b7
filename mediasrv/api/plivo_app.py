"""Wires the Plivo dialect: its core (plivo.py) and its DTMF extension (plivo_dtmf.py).

A module of its own so that neither imports the other's wiring: plivo_dtmf.py builds on
plivo.py, and plivo.py knows nothing of plivo_dtmf.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..events.bus import WebhookSink
from . import plivo_dtmf
from .dialect import Dialect, error_shape, mount
from .plivo import OPENAPI_DIALECT, PLIVO_KEY, PlivoDialect, PlivoError, log, plivo_error

if TYPE_CHECKING:
    from ..nodeview import Node


def setup(app: web.Application, server: Node) -> None:
    """Serve Plivo's Play API; without auth id and token everything answers 401."""
    settings = server.settings
    dialect = PlivoDialect(server, settings.plivo_auth_id, settings.plivo_auth_token)
    app[PLIVO_KEY] = dialect
    if settings.plivo_auth_id and settings.plivo_auth_token:
        log.info("Plivo dialect on /v1/Account/%s/", settings.plivo_auth_id)
    else:
        log.info("Plivo dialect disabled (no MEDIASRV_PLIVO_AUTH_ID / _AUTH_TOKEN): /v1/Account answers 401")
    sink = WebhookSink(dialect.render, server.events.sink_settings(), name="plivo-callback", rebuild=dialect.build)
    unit = Dialect("plivo", "/v1/Account/", [error_shape(PlivoError, plivo_error), dialect.auth], sinks=[sink],
                   openapi=OPENAPI_DIALECT)
    r = dialect.route
    call = "/v1/Account/{auth_id}/Call/{call_uuid}"
    play = call + "/Play"
    unit.add_routes([
        web.post(play + "/", r(dialect.play)),
        web.post(play, r(dialect.play)),
        web.delete(play + "/", r(dialect.stop)),
        web.delete(play, r(dialect.stop)),
        web.post(call + "/Speak/", r(dialect.speak)),
        web.post(call + "/Speak", r(dialect.speak)),
        web.delete(call + "/Speak/", r(dialect.stop_speak)),
        web.delete(call + "/Speak", r(dialect.stop_speak)),
        web.delete(call + "/", r(dialect.hangup)),
        web.delete(call, r(dialect.hangup)),
    ])
    # send digits: its own module, routes before the catch-all
    plivo_dtmf.add_routes(unit, dialect)
    OPENAPI_DIALECT["routes"] += [r for r in plivo_dtmf.OPENAPI_ROUTES if r not in OPENAPI_DIALECT["routes"]]
    unit.add_routes([web.route("*", "/v1/Account/{auth_id}/{tail:.*}", r(dialect.not_found))])
    mount(app, server, unit)
