"""A safe HTTP fetcher for audio URLs: checked addresses, bounded time and size, manual redirects.

Why not a plain ``session.get``: an audio URL comes from whoever sends play commands, so it can
point at the cloud metadata service, at the server's own loopback admin ports, at an endless
body or at a server that answers one byte a minute.  The session comes from
:mod:`mediasrv.egress` (purpose ``fetch``): every address is checked *after* DNS resolution and
every IP literal before connecting, every redirect hop (followed here, by hand) is checked again, Basic credentials never follow a redirect to another origin, and the body is bounded in
bytes and time while it streams.  Failures are :class:`SourceError` with a machine reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from ..egress import REDIRECTS, AddressPolicy, EgressRefused, Purpose, new_session, public_url, refusal_of
from .errors import SourceError

__all__ = ["AddressPolicy", "FetchResponse", "FetchSettings", "Fetcher", "ForbiddenAddress", "public_url"]

log = logging.getLogger("mediasrv.fetch")

USER_AGENT = "mediasrv/0.1 (audio fetch; +https://github.com/mediasrv)"
ForbiddenAddress = EgressRefused  # the name this module used before egress.py


@dataclass
class FetchSettings:
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 10.0  # from sending the request to the response headers
    total_timeout_s: float = 30.0  # the whole download, redirects included
    read_idle_timeout_s: float = 10.0  # a body that stops moving for this long fails
    max_bytes: int = 250 * 1024 * 1024
    max_redirects: int = 5
    allow_cidrs: list[str] = field(default_factory=list)
    deny_cidrs: list[str] = field(default_factory=list)
    user_agent: str = USER_AGENT


def _origin(u: URL) -> tuple[str, str, int | None]:
    return (u.scheme, (u.host or "").lower(), u.port)


class FetchResponse:
    """An open response: status, headers, and the body as bounded chunks (use ``async with``)."""

    def __init__(self, fetcher: Fetcher, resp: aiohttp.ClientResponse, url: URL, deadline: float) -> None:
        self._fetcher = fetcher
        self._resp = resp
        self.url = url
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self.deadline = deadline
        self.received = 0

    @property
    def content_type(self) -> str | None:
        raw = self.headers.get("Content-Type")
        return raw.split(";", 1)[0].strip().lower() or None if raw else None

    @property
    def content_length(self) -> int | None:
        return self._resp.content_length

    async def chunks(self, size: int = 1 << 16) -> AsyncIterator[bytes]:
        """The body in pieces of what has arrived (at most *size* bytes each).

        ``too_large`` past the size limit (checked as it streams, whatever Content-Length
        says), ``fetch_timeout`` when it stalls or the total time runs out, ``truncated``
        when the connection ends before the declared length.  Time the consumer spends
        between pieces (decoding) does not count against the total timeout.
        """
        s = self._fetcher.settings
        loop = asyncio.get_running_loop()
        declared = self._resp.content_length
        if declared is not None and declared > s.max_bytes:
            raise SourceError("too_large", f"{public_url(self.url)}: {declared} bytes declared, "
                                           f"the limit is {s.max_bytes}")
        content = self._resp.content
        while True:
            left = self.deadline - loop.time()
            if left <= 0:
                raise SourceError("fetch_timeout", f"{public_url(self.url)}: download not finished within "
                                                   f"{s.total_timeout_s:g} s")
            try:
                chunk = await asyncio.wait_for(content.readany(), min(left, s.read_idle_timeout_s))
                while chunk and len(chunk) < size:
                    more = content.read_nowait(size - len(chunk))
                    if not more:
                        break
                    chunk += more
            except TimeoutError:
                raise SourceError("fetch_timeout", f"{public_url(self.url)}: the body stalled after "
                                                   f"{self.received} bytes") from None
            except aiohttp.ClientPayloadError as exc:
                raise SourceError("truncated", f"{public_url(self.url)}: body cut short after "
                                               f"{self.received} bytes ({exc})") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise SourceError("fetch_error", f"{public_url(self.url)}: {type(exc).__name__}: {exc}") from exc
            if not chunk:
                if declared is not None and self.received < declared:
                    raise SourceError("truncated", f"{public_url(self.url)}: {self.received} of {declared} bytes")
                return
            self.received += len(chunk)
            if self.received > s.max_bytes:
                raise SourceError("too_large", f"{public_url(self.url)}: more than {s.max_bytes} bytes")
            handed = loop.time()
            yield chunk
            self.deadline += loop.time() - handed  # the consumer's time is not the origin's

    def close(self) -> None:
        self._resp.close()

    async def __aenter__(self) -> FetchResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Fetcher:
    """Owns one aiohttp session whose connector only reaches addresses the policy allows."""

    def __init__(self, settings: FetchSettings | None = None, policy: AddressPolicy | None = None) -> None:
        self.settings = settings or FetchSettings()
        self.policy = policy or AddressPolicy.from_cidrs(self.settings.allow_cidrs, self.settings.deny_cidrs,
                                                         Purpose.FETCH)
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # origin requests made (each redirect hop counts)

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session(self.policy, self.settings.user_agent, limit=200, limit_per_host=50,
                                        auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _check_literal(self, u: URL) -> None:
        """Refused literals fail before the request (the connector would refuse them too)."""
        try:
            self.policy.check_literal(u)
        except EgressRefused as exc:
            raise SourceError("forbidden_address", f"{public_url(u)}: {exc}") from None

    async def open(self, url: str, username: str | None = None, password: str | None = None,
                   headers: Mapping[str, str] | None = None) -> FetchResponse:
        """GET *url* (following at most ``max_redirects`` redirects, each checked) up to its headers.

        Returns a 200 or 304 response; any other final status is ``http_<code>``.
        """
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.total_timeout_s
        session = self._session_for_loop()
        try:
            u = URL(url)
        except ValueError as exc:
            raise SourceError("invalid_url", f"{url!r} is not a URL") from exc
        first_origin = _origin(u)
        auth = aiohttp.encode_basic_auth(username, password or "") if username is not None else None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout_s, sock_read=s.first_byte_timeout_s)
        for hop in range(s.max_redirects + 1):
            if u.scheme not in ("http", "https") or not u.host:
                raise SourceError("invalid_url", f"{public_url(u)}: only http(s) URLs can be fetched")
            self._check_literal(u)
            hop_headers = dict(headers or {})
            if auth is not None and _origin(u) == first_origin:  # credentials never go to another origin
                hop_headers["Authorization"] = auth
            left = deadline - loop.time()
            try:
                self.requests += 1
                resp = await asyncio.wait_for(
                    session.get(u, headers=hop_headers, allow_redirects=False, timeout=timeout),
                    min(left, s.connect_timeout_s + s.first_byte_timeout_s),
                )
            except TimeoutError:
                raise SourceError("fetch_timeout", f"{public_url(u)}: no response headers within "
                                                   f"{min(left, s.connect_timeout_s + s.first_byte_timeout_s):g} s"
                                  ) from None
            except aiohttp.ClientConnectorError as exc:
                refused = refusal_of(exc)
                if refused is not None:
                    raise SourceError("forbidden_address", f"{public_url(u)}: {refused}") from None
                if isinstance(exc, aiohttp.ClientConnectorDNSError):
                    raise SourceError("unreachable", f"{public_url(u)}: cannot resolve {u.host}") from None
                raise SourceError("unreachable", f"{public_url(u)}: cannot connect: {exc.os_error or exc}") from None
            except aiohttp.ServerTimeoutError:
                raise SourceError("fetch_timeout", f"{public_url(u)}: connect timed out") from None
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise SourceError("fetch_error", f"{public_url(u)}: {type(exc).__name__}: {exc}") from None
            if resp.status in REDIRECTS and "Location" in resp.headers:
                location = resp.headers["Location"]
                resp.release()
                try:
                    u = u.join(URL(location))
                except ValueError as exc:
                    raise SourceError("fetch_error", f"{public_url(u)}: bad redirect Location") from exc
                log.debug("redirect %d -> %s", hop + 1, public_url(u))
                continue
            if resp.status not in (200, 304):
                status, reason = resp.status, resp.reason or ""
                resp.release()
                raise SourceError(f"http_{status}", f"{public_url(u)}: HTTP {status} {reason}".strip())
            return FetchResponse(self, resp, u, deadline)
        raise SourceError("too_many_redirects", f"{public_url(url)}: more than {s.max_redirects} redirects")

