"""Plivo ``POST /v1/Account/{auth_id}/Call/{call_uuid}/DTMF/``: send digits on a call (``client.calls.send_digits``).

``{"digits": "12#", "leg": "aleg"|"bleg"}`` becomes the core's DTMF out (RFC 4733 when the far
end offered telephone-event, else in-band tones) on the call's own leg (``aleg``) or the leg
bridged with it (``bleg``), ``w``/``W`` pausing 0.5 s / 1 s (api/dtmf_pauses.py); 202 ``{"message": "digits sent", "api_id"}``.  Plivo sends no
callback for it.  Receiving digits (``<GetDigits>``/``<GetInput>``) is XML-driven: the Plivo
dialect has no XML interpreter, so that side is not served.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..calls.commands import InvalidCommand, LegUnavailable
from . import dtmf_pauses

if TYPE_CHECKING:
    from .dialect import Dialect
    from .plivo import PlivoDialect

DIGIT_MS = 100  # Plivo has no duration parameter


def add_routes(unit: Dialect, dialect: PlivoDialect) -> None:
    """Before the dialect's catch-all."""
    from .plivo import PlivoError

    async def send_digits(request: web.Request, body: dict[str, Any]) -> web.Response:
        digits = body.get("digits")
        if not isinstance(digits, str) or not digits:
            raise PlivoError(400, "digits is required: a string of DTMF keys (0-9, *, #, A-D)")
        if not dtmf_pauses.valid(digits):
            raise PlivoError(400, "digits must be 1-64 DTMF keys (0-9, *, #, A-D), w (0.5 s) and W (1 s) pauses "
                                  "between them")
        leg = body.get("leg") or "aleg"
        if leg not in ("aleg", "bleg"):
            raise PlivoError(400, "leg must be aleg or bleg")
        call = dialect._call(request.match_info["call_uuid"])
        target = call.call_id
        if leg == "bleg":
            peers = dialect.server.media.peers_of(call.call_id)
            if len(peers) != 1:
                raise PlivoError(400, "leg bleg: the call is not bridged with one other leg")
            target = peers[0]
        try:
            dtmf_pauses.sender(dialect.server).start(target, digits, DIGIT_MS)
        except LegUnavailable as exc:
            raise PlivoError(404, "call not found: it has no media") from exc
        except InvalidCommand as exc:
            raise PlivoError(409 if exc.status == 409 else 400, f"digits: {exc}") from exc
        return web.json_response({"message": "digits sent", "api_id": str(uuid.uuid4())}, status=202)

    dtmf = "/v1/Account/{auth_id}/Call/{call_uuid}/DTMF"
    handler = dialect.route(send_digits)
    unit.add_routes([web.post(dtmf + "/", handler), web.post(dtmf, handler)])


OPENAPI_ROUTES = [{"method": "POST", "path": "/v1/Account/{auth_id}/Call/{call_uuid}/DTMF/",
                   "maps_to": "POST /v1/calls/{call_id}/dtmf (leg bleg: the bridged leg)"}]
