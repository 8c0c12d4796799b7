"""The INFO lines an operator reads: one per call offered / answered / ended, playback started / ended.

Called by the server for every call and playback event, inside the call's logging context
(:mod:`mediasrv.ops.logs`), so each line carries the call id without pasting it. Everything a peer
or client chose (URIs, display names, source URLs, failure messages) goes through
:func:`~mediasrv.ops.logsafe.clip`. The structured fields ride along as ``extra=`` for JSON logs.
"""

from __future__ import annotations

import logging
from typing import Any

from ..calls.registry import Call, Direction
from .logsafe import clip

log = logging.getLogger("mediasrv.calls")
playlog = logging.getLogger("mediasrv.playback")


def call_event(type_: str, call: Call) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    if type_ == "call.initiated":
        verb = "offered" if call.direction is Direction.INBOUND else "placed"
        log.info("call %s: from %s to %s (SIP Call-ID %s)", verb, clip(call.from_uri), clip(call.to_uri),
                 clip(call.sip_call_id, 80), extra={"event": type_, "direction": call.direction.value})
    elif type_ == "call.answered":
        m = call.media
        remote = f"{m.remote_addr[0]}:{m.remote_addr[1]}" if m and m.remote_addr else "-"
        log.info("call answered: %s, remote RTP %s", m.codec.name if m else "no media", remote,
                 extra={"event": type_, "codec": m.codec.name if m else None})
    elif type_ == "call.hangup":
        start = call.answered_at or call.created_at
        seconds = (call.ended_at or start) - start
        sip = f", SIP {call.sip_code}" if call.sip_code else ""
        log.info("call ended: cause %s by %s after %.1f s%s", call.hangup_cause, call.hangup_by, seconds, sip,
                 extra={"event": type_, "cause": call.hangup_cause, "by": call.hangup_by,
                        "duration_s": round(seconds, 3), "sip_code": call.sip_code})


def playback_event(type_: str, data: dict[str, Any]) -> None:
    if type_ not in ("playback.started", "playback.ended") or not playlog.isEnabledFor(logging.INFO):
        return
    pid = data.get("playback_id")
    source = clip(data.get("source"), 160)
    if type_ == "playback.started":
        playlog.info("playback started: %s %s%s", pid, source, " (overlay)" if data.get("overlay") else "",
                     extra={"event": type_, "playback_id": pid})
        return
    status, reason = data.get("status"), data.get("reason")
    detail = f", reason {clip(reason, 60)}" if reason else ""
    if data.get("message") and status == "failed":
        detail += f": {clip(data['message'])}"
    if data.get("stopped_by"):
        detail += f", stopped by {clip(data['stopped_by'], 60)}"
    playlog.info("playback ended: %s %s after %s ms%s", pid, status, data.get("ms_played"), detail,
                extra={"event": type_, "playback_id": pid, "status": status, "reason": reason,
                       "ms_played": data.get("ms_played")})
