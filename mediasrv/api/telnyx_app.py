"""Wires the Telnyx dialect: its core (telnyx.py) and its DTMF/IVR extension (telnyx_ivr.py).

A module of its own so that neither imports the other's wiring: telnyx_ivr.py builds on
telnyx.py, and telnyx.py knows nothing of telnyx_ivr.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..events.bus import WebhookSink
from . import telnyx_ivr
from .dialect import Dialect, error_shape, mount
from .signing import Ed25519Signer
from .telnyx import OPENAPI_DIALECT, TELNYX_KEY, TelnyxDialect, TelnyxError, log, telnyx_error

if TYPE_CHECKING:
    from ..nodeview import Node


def setup(app: web.Application, server: Node) -> None:
    """Serve ``/v2`` and deliver Telnyx webhooks; without ``telnyx_api_key`` everything answers 401."""
    settings = server.settings
    # the key pair is made only for an enabled dialect: a disabled one never touches the data dir
    signer = Ed25519Signer.load_or_create(settings.data_dir) if settings.telnyx_api_key else None
    webhook_url = settings.telnyx_webhook_url or settings.webhook_url
    dialect = TelnyxDialect(server, settings.telnyx_api_key, webhook_url, signer)
    app[TELNYX_KEY] = dialect
    if not settings.telnyx_api_key:
        log.info("Telnyx dialect disabled (no MEDIASRV_TELNYX_API_KEY): /v2 answers 401")
    else:
        log.info("Telnyx dialect on /v2; webhooks to %s, public key %s", webhook_url or "(none)",
                 signer.public_key_b64 if signer else "?")
    dialect.sink = WebhookSink(dialect.render, server.events.sink_settings(), name="telnyx-webhook",
                               rebuild=dialect.build)
    unit = Dialect("telnyx", "/v2/", [error_shape(TelnyxError, telnyx_error), dialect.auth], sinks=[dialect.sink],
                   openapi=OPENAPI_DIALECT)
    r = dialect.route
    actions = "/v2/calls/{call_control_id}/actions/"
    unit.add_routes([
        web.post(actions + "playback_start", r(dialect.playback_start)),
        web.post(actions + "playback_stop", r(dialect.playback_stop)),
        web.post(actions + "speak", r(dialect.speak)),
        web.post(actions + "answer", r(dialect.answer)),
        web.post(actions + "hangup", r(dialect.hangup)),
        web.post(actions + "reject", r(dialect.reject)),
        web.post(actions + "bridge", r(dialect.bridge)),
        web.get("/v2/public_key", r(dialect.public_key, action=False)),
    ])
    # DTMF commands (gather, send_dtmf): their own module, routes before the catch-all
    telnyx_ivr.setup(unit, dialect)
    OPENAPI_DIALECT["routes"] += [r for r in telnyx_ivr.OPENAPI_ROUTES if r not in OPENAPI_DIALECT["routes"]]
    unit.add_routes([web.route("*", "/v2/{tail:.*}", r(dialect.not_found, action=False))])
    mount(app, server, unit)
