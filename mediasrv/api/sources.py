"""Parsing the source part of a play command (native API; dialects build SourceSpecs themselves)."""

from __future__ import annotations

from typing import Any

from ..media.player import SourceSpec
from .errors import ApiError


def _at(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def parse_source(item: Any, field: str) -> SourceSpec:
    """One ``{"url"}`` or ``{"media"}`` object → a SourceSpec, or a 400/422 naming *field*."""
    if not isinstance(item, dict):
        raise ApiError(400, "invalid_field", f"{field or 'body'} must be an object", field=field)
    url, media = item.get("url"), item.get("media")
    if url is None and media is None:
        raise ApiError(400, "missing_field", "one of 'url' or 'media' is required", field=_at(field, "url"))
    if url is not None and media is not None:
        raise ApiError(422, "conflicting_fields", "give either 'url' or 'media', not both", field=_at(field, "media"))
    if url is not None and (not isinstance(url, str) or not url.lower().startswith(("http://", "https://"))):
        raise ApiError(400, "invalid_field", "url must be an http(s) URL", field=_at(field, "url"))
    if media is not None and (not isinstance(media, str) or not media):
        raise ApiError(400, "invalid_field", "media must be a media name", field=_at(field, "media"))
    return SourceSpec(url=url, media=media)


def parse_sources(body: dict[str, Any]) -> list[SourceSpec]:
    """The sources of a native play command: the top-level fields, or a ``sources`` list."""
    if "sources" in body:
        items = body["sources"]
        if not isinstance(items, list) or not items:
            raise ApiError(400, "invalid_field", "sources must be a non-empty list", field="sources")
        return [parse_source(item, f"sources[{i}]") for i, item in enumerate(items)]
    spec = parse_source(body, "")
    return [spec]
