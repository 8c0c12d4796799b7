"""Parsing the source part of a play command (native API; dialects build SourceSpecs themselves).

A source is exactly one of ``{"url"}``, ``{"media"}``, ``{"content_base64", "audio_type"}``, a
synthesized ``{"tone", "duration_ms"}`` / ``{"digits", "digit_ms", "gap_ms"}`` (content/tones.py), or
``{"speak": {"text" | "ssml", "voice", "rate"}}`` (text to speech, :mod:`mediasrv.content.synth`),
with optional ``"cache": true|false``, ``"cache_id"`` and ``"auth": {"username", "password"}``
(URL sources only).  Every mistake is a 400/422 whose ``field`` points at the offending value.
"""

from __future__ import annotations

import binascii
from typing import Any

from ..content.source import decode_base64
from ..content.store import valid_name
from ..content.synth import DEFAULT_RATE, DEFAULT_VOICE, SpeechInputError, SpeechSpec, check
from ..content.tones import ToneError, dtmf_pcm, tone_pcm
from ..media.player import SourceSpec
from .errors import ApiError, check_fields

AUDIO_TYPES = frozenset({"wav", "mp3", "audio/wav", "audio/x-wav", "audio/wave", "audio/mpeg", "audio/mp3",
                         "flac", "ogg", "opus", "m4a", "aac", "audio/flac", "audio/x-flac", "audio/ogg",
                         "audio/opus", "audio/mp4", "audio/x-m4a", "audio/aac"})
MAX_CACHE_ID = 256
SOURCE_FIELDS = frozenset({"url", "media", "content_base64", "audio_type", "cache", "cache_id", "auth",
                           "tone", "duration_ms", "digits", "digit_ms", "gap_ms", "speak"})
AUTH_FIELDS = frozenset({"username", "password"})
SPEAK_FIELDS = frozenset({"text", "ssml", "voice", "rate"})


def _at(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _str(item: dict[str, Any], key: str, field: str, what: str) -> str | None:
    value = item.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ApiError(400, "invalid_field", f"{key} must be {what}", field=_at(field, key))
    return value


def _opt_int(item: dict[str, Any], key: str, field: str, default: int | None) -> int | None:
    value = item.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ApiError(400, "invalid_field", f"{key} must be an integer", field=_at(field, key))
    return value


def _default(value: int | None, default: int) -> int:
    return default if value is None else value


def parse_synth(item: dict[str, Any], field: str) -> SourceSpec:
    """``{"tone": spec, "duration_ms"?}`` or ``{"digits": "123#", "digit_ms"?, "gap_ms"?}`` (content/tones.py),
    synthesized once here so that a bad spec is a 422 naming the field, not a failed playback."""
    tone = _str(item, "tone", field, "a tone name or spec")
    digits = _str(item, "digits", field, "DTMF keys")
    others = [k for k in ("url", "media", "content_base64") if item.get(k) is not None]
    if (tone is not None and digits is not None) or others:
        extra = "digits" if tone is not None and digits is not None else others[0]
        raise ApiError(422, "conflicting_fields", "give one of 'url', 'media', 'content_base64', 'tone' or 'digits'",
                       field=_at(field, extra))
    for key in ("cache", "cache_id", "auth", "audio_type"):
        if item.get(key) is not None:
            raise ApiError(422, "invalid_field", f"{key} does not apply to tone or digits sources", field=_at(field, key))
    spec = SourceSpec(tone=tone, digits=digits.upper() if digits is not None else None,
                      duration_ms=_opt_int(item, "duration_ms", field, None),
                      digit_ms=_default(_opt_int(item, "digit_ms", field, 100), 100),
                      gap_ms=_default(_opt_int(item, "gap_ms", field, 100), 100))
    if tone is None and spec.duration_ms is not None:
        raise ApiError(422, "invalid_field", "duration_ms applies to tone sources", field=_at(field, "duration_ms"))
    try:
        if tone is not None:
            tone_pcm(tone, spec.duration_ms)
        else:
            dtmf_pcm(spec.digits or "", spec.digit_ms, spec.gap_ms)
    except ToneError as exc:
        raise ApiError(422, "invalid_field", str(exc), field=_at(field, "tone" if tone is not None else "digits")) from None
    return spec


def parse_source(item: Any, field: str, strict: bool = True) -> SourceSpec:
    """One source object → a SourceSpec, or a 400/422 naming *field*.

    *strict*: any key but the source fields is an unknown field (off where the object is the
    whole play command, whose other fields the caller checks).
    """
    if not isinstance(item, dict):
        raise ApiError(400, "invalid_field", f"{field or 'body'} must be an object", field=field)
    if strict:
        check_fields(item, SOURCE_FIELDS, field)
    if "speak" in item:
        return parse_speak(item, field)
    if item.get("tone") is not None or item.get("digits") is not None:
        return parse_synth(item, field)
    url = _str(item, "url", field, "an http(s) URL")
    media = _str(item, "media", field, "a media name")
    content = _str(item, "content_base64", field, "base64 text")
    given = [k for k, v in (("url", url), ("media", media), ("content_base64", content)) if v is not None]
    if not given:
        raise ApiError(400, "missing_field", "one of 'url', 'media', 'content_base64', 'tone' or 'digits' is required",
                       field=_at(field, "url"))
    if len(given) > 1:
        raise ApiError(422, "conflicting_fields", f"give one of 'url', 'media' or 'content_base64', not "
                       f"{' and '.join(repr(g) for g in given)}", field=_at(field, given[1]))
    if url is not None and not url.lower().startswith(("http://", "https://")):
        raise ApiError(400, "invalid_field", "url must be an http(s) URL", field=_at(field, "url"))
    if media is not None and not valid_name(media):
        raise ApiError(400, "invalid_field", "media must be a media name (letters, digits, '.', '_', '-')",
                       field=_at(field, "media"))
    spec = SourceSpec(url=url, media=media)
    if content is not None:
        try:
            spec.content = decode_base64(content)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(400, "invalid_base64", f"content_base64 is not valid base64: {exc}",
                           field=_at(field, "content_base64")) from exc
        if not spec.content:
            raise ApiError(400, "invalid_field", "content_base64 holds no bytes", field=_at(field, "content_base64"))
    audio_type = _str(item, "audio_type", field, "an audio type such as \"wav\", \"mp3\" or \"flac\"")
    if audio_type is not None:
        if audio_type.lower() not in AUDIO_TYPES:
            raise ApiError(422, "invalid_field", f"audio_type must be one of {sorted(AUDIO_TYPES)}",
                           field=_at(field, "audio_type"))
        spec.audio_type = audio_type.lower()
    cache = item.get("cache")
    if cache is not None and not isinstance(cache, bool):
        raise ApiError(400, "invalid_field", "cache must be true or false", field=_at(field, "cache"))
    spec.cache = cache
    spec.cache_id = _str(item, "cache_id", field, "a non-empty string")
    if spec.cache_id is not None and len(spec.cache_id) > MAX_CACHE_ID:
        raise ApiError(422, "invalid_field", f"cache_id is longer than {MAX_CACHE_ID}", field=_at(field, "cache_id"))
    auth = item.get("auth")
    if auth is not None:
        if url is None:
            raise ApiError(422, "invalid_field", "auth applies to url sources only", field=_at(field, "auth"))
        if not isinstance(auth, dict) or not isinstance(auth.get("username"), str):
            raise ApiError(400, "invalid_field", "auth must be {\"username\", \"password\"}",
                           field=_at(field, "auth.username"))
        check_fields(auth, AUTH_FIELDS, _at(field, "auth"))
        password = auth.get("password", "")
        if not isinstance(password, str):
            raise ApiError(400, "invalid_field", "auth.password must be a string", field=_at(field, "auth.password"))
        spec.username, spec.password = auth["username"], password
    if (spec.cache is not None or spec.cache_id is not None) and url is None:
        raise ApiError(422, "invalid_field", "cache and cache_id apply to url sources only",
                       field=_at(field, "cache" if spec.cache is not None else "cache_id"))
    return spec


def parse_sources(body: dict[str, Any]) -> list[SourceSpec]:
    """The sources of a native play command: the top-level fields, or a ``sources`` list."""
    if "sources" in body:
        items = body["sources"]
        if not isinstance(items, list) or not items:
            raise ApiError(400, "invalid_field", "sources must be a non-empty list", field="sources")
        stray = sorted(SOURCE_FIELDS & body.keys())
        if stray:
            raise ApiError(422, "conflicting_fields", f"give the source in 'sources' or at the top level, not both "
                           f"(top-level {', '.join(repr(s) for s in stray)})", field=stray[0])
        return [parse_source(item, f"sources[{i}]") for i, item in enumerate(items)]
    return [parse_source(body, "", strict=False)]



def parse_speak(item: dict[str, Any], field: str) -> SourceSpec:
    """``{"speak": {"text": ..., "voice": "en-us", "rate": 175}}`` (or ``"ssml"`` instead of ``"text"``)."""
    where = _at(field, "speak")
    others = [k for k in ("url", "media", "content_base64", "tone", "digits") if item.get(k) is not None]
    if others:
        raise ApiError(422, "conflicting_fields", f"give one of 'url', 'media', 'content_base64' or 'speak', not "
                       f"'speak' and {others[0]!r}", field=_at(field, others[0]))
    speak = item["speak"]
    if not isinstance(speak, dict):
        raise ApiError(400, "invalid_field", "speak must be an object {\"text\" or \"ssml\", \"voice\", \"rate\"}",
                       field=where)
    check_fields(speak, SPEAK_FIELDS, where)
    text, ssml = speak.get("text"), speak.get("ssml")
    if (text is None) == (ssml is None):
        raise ApiError(400, "missing_field" if text is None else "conflicting_fields",
                       "speak needs exactly one of 'text' or 'ssml'", field=f"{where}.text")
    kind = "text" if text is not None else "ssml"
    body = text if text is not None else ssml
    if not isinstance(body, str):
        raise ApiError(400, "invalid_field", f"{kind} must be a string", field=f"{where}.{kind}")
    voice = speak.get("voice", DEFAULT_VOICE)
    if not isinstance(voice, str) or not voice:
        raise ApiError(400, "invalid_field", "voice must be a voice name such as \"en-us\"", field=f"{where}.voice")
    rate = speak.get("rate", DEFAULT_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise ApiError(400, "invalid_field", "rate must be an integer (words per minute)", field=f"{where}.rate")
    try:
        spec = check(SpeechSpec(text=body, voice=voice.lower(), rate=rate, ssml=ssml is not None))
    except SpeechInputError as exc:
        raise ApiError(exc.status, "invalid_speech" if exc.status == 422 else "invalid_field", exc.message,
                       field=f"{where}.{exc.field}") from exc
    return SourceSpec(speech=spec)
