"""Native routes for the media store (``/v1/media``) and the audio cache (``/v1/media-cache``).

Uploads stream to a temporary file (bounded by ``max_fetch_bytes``) and are decoded once,
completely, before they are accepted (a truncated or corrupt file is refused, not just one with
a bad header); a body that is not playable audio is a 422 whose code is the decoder's reason.
The decoded audio is kept for the first play.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..content.errors import SourceError
from ..content.store import valid_name
from ..ops.logsafe import clip
from .errors import ApiError, read_json_object
from .native import SERVER_KEY
from .sources import parse_source

if TYPE_CHECKING:
    from ..content.loader import MediaLoader

CHUNK = 1 << 16
PREFETCH_FIELDS = frozenset({"url", "cache", "cache_id", "auth"})


def _loader(request: web.Request) -> MediaLoader:
    return request.app[SERVER_KEY].media.loader


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if not valid_name(name):
        raise ApiError(400, "invalid_media_name",
                       "a media name is 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit, "
                       "without '..'", field="name")
    return name


async def _in_executor(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def _body_chunks(request: web.Request) -> Any:
    """The upload's bytes: the raw body, or the first file part of a multipart/form-data body."""
    if request.content_type.startswith("multipart/"):
        try:
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    raise ApiError(400, "missing_field", "the multipart body has no file part", field="file")
                if isinstance(part, BodyPartReader) and (part.filename or part.name in ("file", "media")):
                    break
            while chunk := await part.read_chunk(CHUNK):
                yield chunk
        except (ValueError, AssertionError, HttpProcessingError) as exc:  # no boundary, broken parts or headers
            raise ApiError(400, "bad_multipart", f"malformed multipart body: {clip(exc, 200)}", field="body") from None
        return
    async for chunk in request.content.iter_chunked(CHUNK):
        yield chunk


async def put_media(request: web.Request) -> web.Response:
    loader = _loader(request)
    store = loader.store
    name = _name(request)
    existed = (store.dir / name).is_file()
    fh, tmp = await _in_executor(store.begin)
    size = 0
    try:
        try:
            async for chunk in _body_chunks(request):
                size += len(chunk)
                if size > store.max_bytes:
                    raise ApiError(413, "too_large", f"the upload exceeds {store.max_bytes} bytes")
                await _in_executor(fh.write, chunk)
        finally:
            fh.close()
        if size == 0:
            raise ApiError(400, "empty_body", "the upload has no bytes")
        try:
            media = await loader.decode_upload(name, tmp, size)  # the whole file, once: it must play
            meta = await _in_executor(store.commit, name, tmp)
        except SourceError as exc:
            raise ApiError(422, exc.reason, exc.message, field="body") from exc
    finally:
        await _in_executor(store.abort, tmp)
    await loader.remember_stored(name, media)
    return web.json_response(meta, status=200 if existed else 201)


async def list_media(request: web.Request) -> web.Response:
    return web.json_response({"media": await _in_executor(_loader(request).store.list)})


async def get_media(request: web.Request) -> web.Response:
    name = _name(request)
    try:
        meta = await _in_executor(_loader(request).store.info, name)
    except SourceError as exc:
        raise ApiError(404, "media_not_found", f"no stored media named {name!r}") from exc
    return web.json_response(meta)


async def delete_media(request: web.Request) -> web.Response:
    loader = _loader(request)
    name = _name(request)
    if not await _in_executor(loader.store.delete, name):
        raise ApiError(404, "media_not_found", f"no stored media named {name!r}")
    loader.forget_stored(name)
    return web.json_response({"deleted": name})


# -- cache --------------------------------------------------------------------------------------
async def list_cache(request: web.Request) -> web.Response:
    cache = _loader(request).cache
    return web.json_response({"entries": cache.list(), "memory_bytes": cache.memory_used,
                              "memory_budget": cache.memory_bytes})


async def prefetch(request: web.Request) -> web.Response:
    """Load a URL into the cache and answer once it is decoded: the entry, or the failure reason."""
    body = await read_json_object(request, PREFETCH_FIELDS)
    loader = _loader(request)
    if "url" not in body and isinstance(body.get("cache_id"), str):
        entry = loader.cache.get(f"id:{body['cache_id']}")
        if entry is None:
            raise ApiError(404, "cache_entry_not_found", "no entry with that cache_id (give a url to fetch it)",
                           field="cache_id")
        return web.json_response({"status": "ready", "cached": True,
                                  "entry": entry.to_dict(loader.cache.media(entry.key) is not None)})
    spec = parse_source(body, "")
    if spec.url is None:
        raise ApiError(400, "missing_field", "prefetch needs a url", field="url")
    if spec.cache is None:
        spec.cache = True  # prefetching asks for caching (no-store still wins)
    try:
        media, entry = await loader.prefetch(spec)
    except SourceError as exc:
        raise ApiError(422, exc.reason, exc.message, field="url") from exc
    result: dict[str, Any] = {"status": "ready", "duration_ms": media.duration_ms, "cached": entry is not None}
    if entry is not None:
        result["entry"] = entry.to_dict(loader.cache.media(entry.key) is not None)
    return web.json_response(result)


async def purge_cache(request: web.Request) -> web.Response:
    url, cache_id = request.query.get("url"), request.query.get("cache_id")
    if not url and not cache_id:
        raise ApiError(400, "missing_field", "give url= or cache_id=", field="url")
    purged = await _loader(request).purge(url=url, cache_id=cache_id)
    return web.json_response({"purged": purged})


def add_routes(app: web.Application) -> None:
    app.add_routes([
        web.get("/v1/media", list_media),
        web.put("/v1/media/{name}", put_media),
        web.get("/v1/media/{name}", get_media),
        web.delete("/v1/media/{name}", delete_media),
        web.get("/v1/media-cache", list_cache),
        web.post("/v1/media-cache/prefetch", prefetch),
        web.delete("/v1/media-cache", purge_cache),
    ])
