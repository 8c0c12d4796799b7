"""The native API's OpenAPI 3.1 document, served at ``/openapi.json`` (written by hand, kept small)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": _ERROR}}}


def _ok(desc: str, schema: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


_CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}
_PLAYBACK_ID = {"name": "playback_id", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mediasrv native API", "version": "0.1.0"},
    "security": [{"bearer": []}],
    "paths": {
        "/v1/calls": {"get": {"summary": "List calls", "responses": {"200": {"description": "calls"}}}},
        "/v1/calls/{call_id}": {
            "parameters": [_CALL_ID],
            "get": {"summary": "One call", "responses": {"200": _ok("call", "Call"), "404": _err("unknown call")}},
            "delete": {
                "summary": "Hang up (BYE)",
                "responses": {"200": _ok("call", "Call"), "404": _err("unknown"), "409": _err("ended")},
            },
        },
        "/v1/calls/{call_id}/answer": {
            "parameters": [_CALL_ID],
            "post": {
                "summary": "Answer a ringing call (when not auto-answering)",
                "responses": {"200": _ok("call", "Call"), "404": _err("unknown"), "409": _err("not ringing")},
            },
        },
        "/v1/calls/{call_id}/playbacks": {
            "parameters": [_CALL_ID],
            "post": {
                "summary": "Play on the call's target legs: queue, or overlay the current playback",
                "description": (
                    "One playback per target leg, all sharing command_id. The body is the first playback's "
                    "fields plus `playbacks` (all of them). `stop` stops what is current on the target legs "
                    "first; an overlay needs a main playback on each target leg (else 422 nothing_playing)."
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PlayRequest"}}},
                },
                "responses": {
                    "201": _ok("the first playback, plus `playbacks`", "PlaybackList"),
                    "400": _err("bad JSON or field"),
                    "404": _err("unknown call"),
                    "409": _err("call ended or not answered, no opposite leg, target leg ended"),
                    "422": _err("value out of range, overlay with nothing playing"),
                },
            },
            "delete": {
                "summary": "Stop the current playback (next in queue starts), all, or (overlay=true) the overlays",
                "parameters": [
                    {"name": "stop", "in": "query", "schema": {"type": "string", "enum": ["current", "all"]}},
                    {"name": "overlay", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "command_id", "in": "query", "schema": {"type": "string"},
                     "description": "reported as stopped_by"},
                ],
                "responses": {"200": {"description": "stopped playbacks"}, "404": _err("unknown call")},
            },
        },
        "/v1/playbacks/{playback_id}": {
            "parameters": [_PLAYBACK_ID],
            "get": {"summary": "One playback", "responses": {"200": _ok("playback", "Playback"), "404": _err("unknown")}},
            "delete": {
                "summary": "Stop this playback (a no-op, reported as stopped_now=false, if it already ended)",
                "responses": {"200": _ok("playback", "Playback"), "404": _err("unknown")},
            },
        },
        "/v1/playbacks/{playback_id}/control": {
            "parameters": [_PLAYBACK_ID],
            "post": {
                "summary": "pause | resume | restart | seek {ms} | skip {ms} | volume {db}",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Control"}}},
                },
                "responses": {
                    "200": _ok("playback (with position_ms)", "Playback"),
                    "400": _err("unknown op or missing ms/db"),
                    "404": _err("unknown playback"),
                    "409": _err("playback ended or not started"),
                    "422": _err("seek past the end, volume out of range"),
                },
            },
        },
        "/v1/events": {
            "get": {
                "summary": "Server-sent events stream (or JSON history with Accept: application/json)",
                "parameters": [{"name": "call_id", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "text/event-stream"}},
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
                    }
                },
            },
            "PlayRequest": {
                "type": "object",
                "properties": {
                    "url": {"type": "string", "format": "uri"},
                    "media": {"type": "string", "description": "name of a file under <data-dir>/media"},
                    "loop": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 100}, {"const": "infinity"}]},
                    "sources": {"type": "array", "items": {"type": "object"}, "description": "played in order"},
                    "overlay": {"type": "boolean", "description": "mix over the current main playback"},
                    "stop": {"type": "string", "enum": ["current", "all"]},
                    "target": {"oneOf": [{"type": "string", "enum": ["self", "opposite", "both", "room"]},
                                         {"type": "array", "items": {"type": "string"}}]},
                    "target_legs": {"description": "alias of target (Telnyx)"},
                    "length_s": {"type": "number", "exclusiveMinimum": 0},
                    "mix": {"type": "boolean", "description": "false: target legs hear only the playback"},
                    "duck_db": {"type": "number", "minimum": 0, "maximum": 90},
                    "volume_db": {"type": "number", "minimum": -60, "maximum": 20},
                    "command_id": {"type": "string"},
                },
            },
            "Control": {
                "type": "object",
                "required": ["op"],
                "properties": {
                    "op": {"type": "string", "enum": ["pause", "resume", "restart", "seek", "skip", "volume"]},
                    "ms": {"type": "integer", "description": "seek: absolute; skip: relative (+/-)"},
                    "db": {"type": "number", "minimum": -60, "maximum": 20},
                },
            },
            "PlaybackList": {
                "allOf": [{"$ref": "#/components/schemas/Playback"}],
                "properties": {"playbacks": {"type": "array", "items": {"$ref": "#/components/schemas/Playback"}}},
            },
            "Playback": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "call_id": {"type": "string"},
                    "source": {"type": "string"},
                    "state": {
                        "type": "string",
                        "enum": ["queued", "playing", "completed", "stopped", "failed", "call_hangup"],
                    },
                    "reason": {"type": ["string", "null"]},
                    "ms_played": {"type": "integer"},
                    "command_id": {"type": ["string", "null"]},
                    "target": {},
                    "overlay": {"type": "boolean"},
                    "paused": {"type": "boolean"},
                    "failed_source_index": {"type": ["integer", "null"]},
                    "stopped_by": {"type": ["string", "null"]},
                    "last_seq": {"type": ["integer", "null"]},
                    "last_ts": {"type": ["integer", "null"]},
                },
            },
            "Call": {
                "type": "object",
                "properties": {
                    "call_id": {"type": "string"},
                    "state": {"type": "string", "enum": ["initiated", "ringing", "answered", "ended"]},
                    "direction": {"type": "string", "enum": ["inbound", "outbound"]},
                    "from": {"type": "string"},
                    "to": {"type": "string"},
                    "sip_call_id": {"type": "string"},
                    "codec": {"type": ["string", "null"]},
                    "remote_rtp": {"type": ["string", "null"]},
                    "packets_sent": {"type": "integer"},
                    "packets_received": {"type": "integer"},
                },
            },
        },
    },
}
