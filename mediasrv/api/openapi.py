"""The native API's OpenAPI 3.1 document, served at ``/openapi.json`` (written by hand, kept small)."""

from __future__ import annotations

from typing import Any

from .sources import AUDIO_TYPES

_ERROR = {"$ref": "#/components/schemas/Error"}


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": _ERROR}}}


def _ok(desc: str, schema: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


_CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}
_MEDIA_NAME = {"name": "name", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"}}
_PLAYBACK_ID = {"name": "playback_id", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mediasrv native API", "version": "0.1.0"},
    "security": [{"bearer": []}],
    "paths": {
        "/v1/calls": {"get": {
            "summary": "List calls (calls: the first `limit` of them; total: how many matched)",
            "parameters": [
                {"name": "state", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100000},
                 "description": "at most this many call resources (the live page and `mediasrv top` ask only for "
                                "what they show: each resource costs the server's loop some µs)"},
            ],
            "responses": {"200": {"description": "{calls, total}"}, "400": _err("bad limit")}}},
        "/v1/calls/{call_id}": {
            "parameters": [_CALL_ID],
            "get": {"summary": "One call", "responses": {"200": _ok("call", "Call"), "404": _err("unknown call")}},
            "delete": {
                "summary": "Hang up (BYE)",
                "responses": {"200": _ok("call", "Call"), "404": _err("unknown"), "409": _err("ended")},
            },
        },
        "/v1/calls/{call_id}/pacing": {
            "parameters": [_CALL_ID],
            "get": {
                "summary": "What a live leg sends: worst clock lateness per second over the last minute "
                           "(pacing: [{age_s, max_lateness_ms}], oldest first) and the level of the last ~100 ms "
                           "(level_dbfs, null while only silence goes out); for the live page at /console",
                "responses": {"200": {"description": "{call_id, ptime_ms, pacing, level_dbfs}"},
                              "404": _err("unknown call"), "409": _err("ended, or no media leg yet")},
            },
        },
        "/v1/calls/{call_id}/answer": {
            "parameters": [_CALL_ID],
            "post": {
                "summary": "Answer a ringing call (when not auto-answering)",
                "responses": {"200": _ok("call", "Call"), "404": _err("unknown"), "409": _err("not ringing")},
            },
        },
        "/v1/calls/{call_id}/early_media": {
            "parameters": [_CALL_ID],
            "post": {
                "summary": "Early media on a ringing inbound call without answering it (ARI progress, "
                "FreeSWITCH pre_answer)",
                "description": (
                    "Sends 183 Session Progress with our SDP answer and starts RTP (silence until a "
                    "playback); event call.early_media. The later answer's 200 carries the same SDP and "
                    "the stream goes on (same SSRC, continuous seq and timestamp). The ring timeout still "
                    "applies; the RTP inactivity timeout counts from the answer. Repeating it is a no-op."
                ),
                "responses": {
                    "200": _ok("call", "Call"),
                    "404": _err("unknown"),
                    "409": _err("ended, already answered, outbound, or no SDP offer in the INVITE"),
                },
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
                "summary": "Server-sent events stream for any Accept but an explicit application/json (then the JSON history); "
                           "with Last-Event-ID or since, the journaled events after that seq first (also from "
                           "before a restart), then the live feed",
                "parameters": [
                    {"name": "call_id", "in": "query", "schema": {"type": "string"}},
                    {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0},
                     "description": "resume after this event seq (SSE id); overrides Last-Event-ID"},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer", "minimum": 0},
                     "description": "what EventSource sends on reconnect: resume after this seq"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                     "description": "JSON form with since: at most this many events (default 1000)"},
                ],
                "responses": {"200": {"description": "text/event-stream"}, "400": _err("since is not a seq"),
                              "422": _err("limit out of range")},
            }
        },
        "/v1/media": {"get": {"summary": "List stored media", "responses": {"200": {"description": "media"}}}},
        "/v1/media/{name}": {
            "parameters": [_MEDIA_NAME],
            "put": {
                "summary": "Store audio under a name (raw body or multipart/form-data file part); decoded once "
                           "to validate; written atomically",
                "requestBody": {"required": True, "content": {
                    "audio/*": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {"schema": {"type": "object", "properties": {
                        "file": {"type": "string", "format": "binary"}}}},
                }},
                "responses": {
                    "201": _ok("stored", "MediaInfo"), "200": _ok("replaced", "MediaInfo"),
                    "400": _err("bad name or empty body"), "413": _err("larger than max_fetch_bytes"),
                    "422": _err("not playable audio; code is the reason (not_audio, decode_error, ...)"),
                },
            },
            "get": {"summary": "Metadata of stored media",
                    "responses": {"200": _ok("metadata", "MediaInfo"), "404": _err("unknown")}},
            "delete": {"summary": "Delete stored media", "responses": {"200": {"description": "deleted"},
                                                                        "404": _err("unknown")}},
        },
        "/v1/media-cache": {
            "get": {"summary": "List cache entries (key, bytes, expires, validators)",
                    "responses": {"200": {"description": "entries"}}},
            "delete": {
                "summary": "Purge one entry",
                "parameters": [{"name": "url", "in": "query", "schema": {"type": "string"}},
                               {"name": "cache_id", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "{purged: bool}"}, "400": _err("neither url nor cache_id")},
            },
        },
        "/v1/media-cache/prefetch": {
            "post": {
                "summary": "Fetch and decode a URL into the cache; answers when it is ready",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Source"}}}},
                "responses": {"200": {"description": "{status: ready, cached, duration_ms, entry}"},
                              "404": _err("cache_id only, and no such entry"),
                              "422": _err("the fetch or decode failed; code is the reason")},
            }
        },
        "/v1/drain": {"post": {"summary": "Drain this node (rolling restart): 503 to new INVITEs and OPTIONS, calls "
                                          "carry on, `mediasrv serve` exits when the last one ends",
                               "responses": {"202": {"description": "draining; active_calls still in progress"}}}},
        "/healthz": {"get": {"summary": "Liveness; events_journal.state says whether events are persisted "
                                        "(ok | failing | unavailable | disabled)", "security": [], "responses": {"200": {"description": "ok"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4); the API token or the read-only "
                                        "metrics_token; or on metrics_listen's own address",
                             "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
        "/console": {"get": {"summary": "The live page (HTML): calls, playbacks, pacing plots, level meters; "
                                        "without the login cookie its login form (401)",
                             "security": [], "responses": {"200": {"description": "HTML"},
                                                           "401": {"description": "HTML login form"}}}},
        "/console/login": {
            "get": {"summary": "The console's login form", "security": [],
                    "responses": {"200": {"description": "HTML"}}},
            "post": {"summary": "Log in with the API token (form field token): sets the HttpOnly, SameSite=Strict "
                                "mediasrv_token cookie, good for GET requests of the API (EventSource cannot "
                                "send headers)",
                     "security": [],
                     "responses": {"303": {"description": "to /console"}, "401": {"description": "wrong token"}}},
        },
        "/openapi.json": {"get": {"summary": "This document; vendor dialect routes are listed under x-dialects",
                                  "security": [], "responses": {"200": {"description": "OpenAPI 3 JSON"}}}},
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
            "Source": {
                "type": "object",
                "description": "exactly one of url, media, content_base64, speak; any other field is a 400 "
                               "unknown_field naming it (the native API is strict)",
                "properties": {
                    "url": {"type": "string", "format": "uri"},
                    "media": {"type": "string", "description": "name of stored media (PUT /v1/media/{name})"},
                    "content_base64": {"type": "string", "description": "the audio file itself, base64"},
                    "audio_type": {"type": "string", "enum": sorted(AUDIO_TYPES),
                                   "description": "a hint; the bytes decide"},
                    "cache": {"type": "boolean", "description": "true: cache even without caching headers "
                                                                "(1 h); false: never use the cache"},
                    "cache_id": {"type": "string", "description": "cache key instead of the URL (1 h)"},
                    "auth": {"type": "object", "description": "HTTP Basic for this URL's origin only",
                             "properties": {"username": {"type": "string"}, "password": {"type": "string"}}},
                    "speak": {"$ref": "#/components/schemas/Speak"},
                },
            },
            "Speak": {
                "type": "object",
                "description": "text to speech (espeak-ng, cached by voice, rate and text); exactly one of text, "
                               "ssml. Errors name the field (speak.text, speak.ssml, speak.voice, speak.rate)",
                "properties": {
                    "text": {"type": "string", "maxLength": 3000, "description": "plain text (speech_max_chars)"},
                    "ssml": {"type": "string", "description": "<speak> with voice, prosody, say-as, emphasis, "
                             "break, mark, s, p, sub only (16 KiB); anything else 422"},
                    "voice": {"type": "string", "default": "en-us",
                              "description": "an `espeak-ng --voices` language or file name, optionally with a "
                                             "variant: en-us, en-gb+f3"},
                    "rate": {"type": "integer", "minimum": 80, "maximum": 450, "default": 175,
                             "description": "words per minute"},
                },
            },
            "PlayRequest": {
                "allOf": [{"$ref": "#/components/schemas/Source"}],
                "type": "object",
                "properties": {
                    "sources": {"type": "array", "items": {"$ref": "#/components/schemas/Source"},
                                "description": "played in order as one playback (instead of the top-level source)"},
                    "loop": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 100}, {"const": "infinity"}]},
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
                    "early_media": {
                        "type": "boolean", "default": True,
                        "description": "on a ringing inbound call: true plays as early media (183 Session "
                        "Progress with our SDP, RTP before the answer; the 200 continues the same stream); "
                        "false refuses with 409 call_not_answered",
                    },
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
            "MediaInfo": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"}, "format": {"type": "string"}, "duration_ms": {"type": "integer"},
                    "sample_rate": {"type": "integer"}, "channels": {"type": "integer"}, "size": {"type": "integer"},
                    "sha256": {"type": "string"}, "created_at": {"type": "number"},
                },
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
                    "reason": {"type": ["string", "null"], "description":
                               "why it failed: fetch_timeout, http_<code>, unreachable, too_many_redirects, "
                               "too_large, too_long, forbidden_address, not_audio, truncated, decode_error, "
                               "unsupported_format, media_not_found, invalid_media_name, fetch_error"},
                    "message": {"type": ["string", "null"], "description": "for people, e.g. "
                                "\"text/html, 512 bytes, not audio\""},
                    "ms_played": {"type": "integer"},
                    "loops_done": {"type": "integer", "description":
                                   "passes over the whole source list completed (of a repeating playback)"},
                    "source_index": {"type": "integer", "description": "which source of the list plays now"},
                    "position_ms": {"type": "integer", "description": "position in that source"},
                    "source_duration_ms": {"type": ["integer", "null"],
                                           "description": "that source's length, once fully decoded"},
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
                    "early_media": {"type": "boolean", "description": "media flowed before the answer (183)"},
                    "packets_sent": {"type": "integer"},
                    "packets_received": {"type": "integer"},
                    "jitter_buffer": {
                        "type": "object",
                        "description": "Only while the call is in a bridge or room: how its inbound audio fared "
                        "in its jitter buffer (pushed, played, late, duplicates, ignored, resets, underruns, "
                        "skipped_samples, jitter and target in samples at 8 kHz, pops by the mixer)",
                        "additionalProperties": {"type": "number"},
                    },
                },
            },
        },
    },
}


# -- call topologies (api/topology.py): outbound calls, bridges, rooms ---------------------------
_ROOM_ID = {"name": "room_id", "in": "path", "required": True, "schema": {"type": "string"}}
_CALL_ID_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["call_id"], "properties": {"call_id": {"type": "string"}}}
        }
    },
}

OPENAPI["paths"]["/v1/calls"]["post"] = {
    "summary": "Place an outbound call (201 at once, state initiated; then call.ringing, call.early_media, "
    "call.answered or call.hangup with hangup_cause busy|declined|no_answer|timeout|auth_failed|cancelled|"
    "not_found|rejected and sip_code)",
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OutboundCall"}}},
    },
    "responses": {
        "201": _ok("the new call", "Call"),
        "400": _err("bad JSON or field"),
        "422": _err("unsupported URI, transport or header; timeout out of range"),
        "503": _err("no call can be placed (max_calls, no RTP port)"),
    },
}
OPENAPI["paths"].update(
    {
        "/v1/calls/{call_id}/bridge": {
            "parameters": [_CALL_ID],
            "post": {
                "summary": "Connect two answered calls in one room (created if neither is in one); call.bridged each",
                "requestBody": _CALL_ID_BODY,
                "responses": {
                    "200": _ok("the room", "Room"),
                    "400": _err("call_id missing"),
                    "404": _err("unknown call"),
                    "409": _err("same call, ended or unanswered call, or calls in different rooms"),
                },
            },
        },
        "/v1/calls/{call_id}/unbridge": {
            "parameters": [_CALL_ID],
            "post": {
                "summary": "Take the call out of its room (a two-call bridge dissolves); call.unbridged",
                "responses": {"200": _ok("call", "Call"), "404": _err("unknown call"), "409": _err("in no room")},
            },
        },
        "/v1/rooms": {
            "get": {"summary": "List rooms", "responses": {"200": {"description": "{\"rooms\": [Room]}"}}},
            "post": {"summary": "Create an empty room (lives until deleted)", "responses": {"201": _ok("room", "Room")}},
        },
        "/v1/rooms/{room_id}": {
            "parameters": [_ROOM_ID],
            "get": {"summary": "One room and its members", "responses": {"200": _ok("room", "Room"), "404": _err("unknown")}},
            "delete": {
                "summary": "Delete the room; its calls stay up, unbridged",
                "responses": {"200": _ok("room", "Room"), "404": _err("unknown")},
            },
        },
        "/v1/rooms/{room_id}/join": {
            "parameters": [_ROOM_ID],
            "post": {
                "summary": "Add an answered call to the room",
                "requestBody": _CALL_ID_BODY,
                "responses": {
                    "200": _ok("room", "Room"),
                    "404": _err("unknown room or call"),
                    "409": _err("call ended, unanswered or in another room"),
                },
            },
        },
        "/v1/rooms/{room_id}/leave": {
            "parameters": [_ROOM_ID],
            "post": {
                "summary": "Take a call out of the room (the call stays up)",
                "requestBody": _CALL_ID_BODY,
                "responses": {
                    "200": _ok("room", "Room"),
                    "404": _err("unknown room or call"),
                    "409": _err("not in this room"),
                },
            },
        },
    }
)
OPENAPI["components"]["schemas"].update(
    {
        "OutboundCall": {
            "type": "object",
            "required": ["to"],
            "properties": {
                "to": {"type": "string", "description": "sip: URI; ;transport=tcp selects TCP; host names are resolved"},
                "from": {"type": "string", "description": "sip: URI for From (default sip:mediasrv@<our host>)"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"},
                            "description": "extra INVITE headers (not the ones the server sets itself)"},
                "timeout_s": {"type": "number", "minimum": 1, "maximum": 600, "default": 30},
                "transport": {"type": "string", "enum": ["udp", "tcp"]},
                "auth": {
                    "type": "object",
                    "description": "digest credentials for 401/407 (default: sip_username/sip_password settings)",
                    "properties": {"username": {"type": "string"}, "password": {"type": "string"}},
                },
            },
        },
        "Room": {
            "type": "object",
            "properties": {
                "room_id": {"type": "string"},
                "kind": {"type": "string", "enum": ["bridge", "conference"]},
                "members": {"type": "array", "items": {"type": "string"}},
                "calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}},
                "created_at": {"type": "number"},
            },
        },
    }
)
OPENAPI["components"]["schemas"]["Call"]["properties"].update(
    {
        "room_id": {"type": ["string", "null"]},
        "peers": {"type": "array", "items": {"type": "string"}, "description": "the other calls in its room"},
        "sip_code": {"type": ["integer", "null"], "description": "final SIP status of a failed or refused call"},
        "hangup_cause": {"type": ["string", "null"]},
    }
)

# -- IVR: barge-in, start offset, synthesized sources, play-and-collect, DTMF out (api/ivr.py) ---------
_COLLECT_ID = {"name": "collect_id", "in": "path", "required": True, "schema": {"type": "string"}}
OPENAPI["components"]["schemas"]["Source"]["description"] = "exactly one of url, media, content_base64, tone, digits"
OPENAPI["components"]["schemas"]["Source"]["properties"].update(
    {
        "tone": {"type": "string", "description": "a call-progress tone: dial|ring|busy|congestion|callwaiting "
                 "[/us|uk|de|fr], or FREQ[+FREQ...][@dBm0][:ON/OFF[/ON/OFF...]] (ms), e.g. 440+480:2000/4000; "
                 "one cadence cycle (or duration_ms), 1 s when continuous"},
        "digits": {"type": "string", "description": "in-band DTMF tones for these keys (0-9 * # A-D)"},
        "duration_ms": {"type": "integer", "minimum": 1, "maximum": 600000, "description": "tone: its length"},
        "digit_ms": {"type": "integer", "minimum": 40, "maximum": 2000, "default": 100},
        "gap_ms": {"type": "integer", "minimum": 0, "maximum": 2000, "default": 100},
    }
)
OPENAPI["components"]["schemas"]["PlayRequest"]["properties"].update(
    {
        "barge_in": {"type": "string", "description": "\"any\" or the DTMF keys (e.g. \"#*0\") that stop this "
                     "playback when pressed (RFC 4733 or SIP INFO); playback.ended: stopped_by dtmf, digit"},
        "barge_in_stops": {"type": "string", "enum": ["current", "all"], "default": "current",
                           "description": "all: the playbacks queued behind it stop too"},
        "offset_ms": {"type": "integer", "minimum": 0, "description": "start this far into the source list; "
                      "the first loop iteration only (later ones start at 0), as ARI's offsetms"},
    }
)
OPENAPI["components"]["schemas"].update(
    {
        "CollectRequest": {
            "type": "object",
            "properties": {
                "prompt": {"allOf": [{"$ref": "#/components/schemas/PlayRequest"}],
                           "description": "optional; played with barge-in; no target/overlay/barge_in fields"},
                "min_digits": {"type": "integer", "minimum": 0, "maximum": 128, "default": 1},
                "max_digits": {"type": "integer", "minimum": 1, "maximum": 128, "default": 128},
                "terminator": {"type": "string", "default": "#", "description": "keys that end it (\"\": none)"},
                "first_digit_timeout_ms": {"type": "integer", "minimum": 1, "default": 5000,
                                           "description": "from the prompt's end"},
                "inter_digit_timeout_ms": {"type": "integer", "minimum": 1, "default": 5000},
                "barge_in": {"type": "boolean", "default": True, "description": "a key press stops the prompt"},
                "command_id": {"type": "string"},
            },
        },
        "Collect": {
            "type": "object",
            "properties": {
                "id": {"type": "string"}, "call_id": {"type": "string"}, "command_id": {"type": ["string", "null"]},
                "state": {"type": "string", "enum": ["collecting", "ended"]},
                "digits": {"type": "string"},
                "reason": {"type": ["string", "null"],
                           "enum": ["max_digits", "terminator", "timeout", "call_hangup", "stopped", None]},
                "valid": {"type": "boolean", "description": "min_digits were collected"},
                "prompt_playbacks": {"type": "array", "items": {"type": "string"}},
            },
        },
        "DtmfRequest": {
            "type": "object",
            "required": ["digits"],
            "properties": {
                "digits": {"type": "string", "maxLength": 64, "description": "0-9 * # A-D"},
                "duration_ms": {"type": "integer", "minimum": 40, "maximum": 2000, "default": 100},
            },
        },
    }
)
OPENAPI["paths"].update(
    {
        "/v1/calls/{call_id}/collect": {
            "parameters": [_CALL_ID],
            "post": {
                "summary": "Play a prompt (optional) and collect DTMF digits; ends in one collect.ended event",
                "requestBody": {"content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/CollectRequest"}}}},
                "responses": {"201": _ok("the collect", "Collect"), "400": _err("bad field"),
                              "404": _err("unknown call"), "409": _err("ended or not answered"),
                              "422": _err("impossible limits (the field is named)")},
            },
        },
        "/v1/collects/{collect_id}": {
            "parameters": [_COLLECT_ID],
            "get": {"summary": "One collect", "responses": {"200": _ok("collect", "Collect"), "404": _err("unknown")}},
            "delete": {"summary": "Stop it (collect.ended reason stopped)",
                       "responses": {"200": _ok("collect", "Collect"), "404": _err("unknown")}},
        },
        "/v1/calls/{call_id}/dtmf": {
            "parameters": [_CALL_ID],
            "post": {
                "summary": "Send digits: RFC 4733 when the far end negotiated telephone-event, else in-band tones; "
                           "the audio waits meanwhile; dtmf.sent when done",
                "requestBody": {"content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/DtmfRequest"}}}},
                "responses": {"202": {"description": "queued on the media clock"}, "400": _err("bad field"),
                              "404": _err("unknown call"), "409": _err("ended, not answered, or digits in progress"),
                              "422": _err("bad digits or duration")},
            },
        },
    }
)
