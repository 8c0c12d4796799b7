"""HTTP access log lines and the call context of API requests.

Every request whose path names a call (or a playback of one) runs with that call's id in the
logging context (:mod:`mediasrv.ops.logs`), so whatever it logs, the access line included, says
which call it was about. The access line is one INFO record per request on ``mediasrv.access``
(DEBUG for the successful reads of the operator CLI and of the console page, which poll: so
``mediasrv top`` or an open ``/console`` does not flood the log)
(``access_log = false`` turns it off); the path and user agent are clipped, the query string is
left out (signed URLs and tokens travel there).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..ops.logs import bind_call, call_id_var
from ..ops.logsafe import clip

CALL_PARAMS = ("call_id", "call_control_id", "call_uuid", "call_connection_id")


@web.middleware
async def call_context_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bind the call named by the route (each request runs in its own task: nothing leaks)."""
    info = request.match_info
    call_id = next((info[p] for p in CALL_PARAMS if p in info), None)
    if call_id is None and "playback_id" in info:
        from .native import SERVER_KEY  # late: native imports this package's siblings

        playback = request.app[SERVER_KEY].media.get_playback(info["playback_id"])
        call_id = playback.call_id if playback is not None else None
    if call_id is not None:
        bind_call(clip(call_id, 80))
    return await handler(request)


# the operator commands (mediasrv/client.py) say who they are; `top` polls several reads a second
CLI_AGENT_PREFIX = "mediasrv-cli/"
# the console page (web/console.html) marks its reads: it polls /v1/calls and each call's pacing
CLIENT_HEADER, CONSOLE_CLIENT = "X-Mediasrv-Client", "console"


def access_level(method: str, status: int, agent: str, client: str = "") -> int:
    """INFO for every request, except the successful reads of our own polling clients (``top``,
    the console page): DEBUG."""
    polling = agent.startswith(CLI_AGENT_PREFIX) or client == CONSOLE_CLIENT
    if polling and method in ("GET", "HEAD") and status < 400:
        return logging.DEBUG
    return logging.INFO


class AccessLogger(AbstractAccessLogger):
    """``127.0.0.1 "POST /v1/calls/X/playbacks" 201 412B 3.1ms "curl/8.5"``."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        agent = request.headers.get("User-Agent", "-")
        level = access_level(request.method, response.status, agent, request.headers.get(CLIENT_HEADER, ""))
        if not self.logger.isEnabledFor(level):
            return
        self.logger.log(
            level, '%s "%s %s" %d %sB %.1fms "%s"', request.remote or "-", clip(request.method, 16), clip(request.path, 200),
            response.status, response.body_length, time * 1000, clip(agent, 80),
            extra={"call_id": call_id_var.get(), "http_status": response.status, "duration_ms": round(time * 1000, 2)},
        )
