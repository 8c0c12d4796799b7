"""Operator commands that talk to a running server over its HTTP API: calls, top, events, play, stop.

Why over HTTP and not in-process: they are for the operator of a server already running
(like ``asterisk -r`` or ``fs_cli``), may run on another host, and use only what any API
client can.  The server is ``--url`` (default ``$MEDIASRV_URL`` or http://127.0.0.1:8080),
the token ``$MEDIASRV_API_TOKEN``.  A failure is one line on stderr and an exit code
(:data:`EXIT_UNREACHABLE`, :data:`EXIT_UNAUTHORIZED`, :data:`EXIT_REFUSED`), never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import aiohttp

DEFAULT_URL = "http://127.0.0.1:8080"
CLI_AGENT = "mediasrv-cli"
EXIT_UNREACHABLE = 1  # no server there, or it broke the connection
EXIT_UNAUTHORIZED = 3  # 401: missing or wrong MEDIASRV_API_TOKEN
EXIT_REFUSED = 4  # any other 4xx/5xx: the server's own message is printed


class ClientError(Exception):
    """A failure worth one line to the operator; ``exit_code`` is what the command returns."""

    def __init__(self, message: str, exit_code: int, status: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status  # the HTTP status, when the server answered


def user_agent() -> str:
    """``mediasrv-cli/<version>``: names our requests in the access log, which keeps their polling
    reads out of INFO (mediasrv/api/access.py)."""
    from .version import version

    return f"{CLI_AGENT}/{version()}"


def unreachable(url: str, exc: BaseException) -> str:
    """Why *url* cannot be reached, without aiohttp's connector details (``ssl:default`` for plain http)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        reason = os.strerror(err.errno).lower() if err.errno else (str(err) or type(err).__name__)
        return f"cannot reach mediasrv at {url}: {reason}"
    return f"cannot reach mediasrv at {url}: {exc or type(exc).__name__}"


class Api:
    """A thin aiohttp client for the native API that turns every failure into a :class:`ClientError`."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 10.0) -> None:
        if "://" not in url:  # HOST:PORT, as --http takes it
            url = "http://" + url
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        headers = {"User-Agent": user_agent()}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self._session = aiohttp.ClientSession(headers=headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Api as an async context manager"
        return self._session

    async def _check(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        try:
            body = await resp.json(content_type=None)
            message = body["error"]["message"]
        except (ValueError, KeyError, TypeError, aiohttp.ClientError):
            message = f"HTTP {resp.status}"
        if resp.status == 401:
            hint = "MEDIASRV_API_TOKEN is not set" if not self.token else "MEDIASRV_API_TOKEN is wrong"
            raise ClientError(f"unauthorized by {self.url}: {hint} ({message})", EXIT_UNAUTHORIZED, 401)
        raise ClientError(f"{resp.method} {resp.url.path}: {resp.status} {message}", EXIT_REFUSED, resp.status)

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        try:
            async with self.session.request(method, self.url + path, json=body, params=params or None,
                                            headers={"Accept": "application/json"},
                                            timeout=self.timeout) as resp:
                await self._check(resp)
                if resp.content_type == "application/json":
                    return await resp.json()
                return await resp.text()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ClientError(unreachable(self.url, exc), EXIT_UNREACHABLE) from None

    async def stream(self, path: str, **params: str) -> AsyncIterator[dict[str, Any]]:
        """Server-sent events from *path*, one parsed ``data`` object per event."""
        try:
            async with self.session.get(self.url + path, params=params or None,
                                        headers={"Accept": "text/event-stream"},
                                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as resp:
                await self._check(resp)
                data: list[str] = []
                async for raw in resp.content:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].lstrip())
                    elif not line and data:
                        with suppress(ValueError):
                            yield json.loads("\n".join(data))
                        data = []
        except aiohttp.ClientConnectorError as exc:
            raise ClientError(unreachable(self.url, exc), EXIT_UNREACHABLE) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise ClientError(f"lost the event stream from {self.url}: {exc or type(exc).__name__}",
                              EXIT_UNREACHABLE) from None
        raise ClientError(f"the server at {self.url} ended the event stream (stopping?)", EXIT_UNREACHABLE)


# -- formatting ----------------------------------------------------------------
def _age(since: float | None, now: float) -> str:
    if not since:
        return "-"
    s = max(0, int(now - since))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _clip(text: Any, width: int) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= width else s[: max(0, width - 1)] + "…"


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


def loop_marker(pb: dict[str, Any]) -> str:
    """`` loop ∞ pass 2`` or `` loop x3 pass 1`` for a playback that repeats (its progress is of the
    current pass); without the pass when the server does not say (older servers)."""
    loop = pb.get("loop", 1)
    if loop == "infinity":
        mark = " loop ∞"
    elif isinstance(loop, int) and loop > 1:
        mark = f" loop x{loop}"
    else:
        return ""
    done = pb.get("loops_done")
    return mark + (f" pass {done + 1}" if isinstance(done, int) and pb.get("state") == "playing" else "")


def progress(pb: dict[str, Any], width: int = 20) -> str:
    """``[######--------] 12.3/30.0s`` for a playback whose source length is known, else the time played;
    a repeating playback is marked (``loop ∞``, ``loop x3``)."""
    pos = pb.get("position_ms", 0) / 1000
    total = pb.get("source_duration_ms")
    state = "paused " if pb.get("paused") else ""
    loop = loop_marker(pb)
    if total:
        done = min(width, int(width * pos * 1000 / total))
        return f"{state}[{'#' * done}{'-' * (width - done)}] {pos:5.1f}/{total / 1000:.1f}s{loop}"
    return f"{state}[{'?' * width}] {pos:5.1f}s (loading){loop}" if pb.get("state") != "playing" \
        else f"{state}{pos:5.1f}s{loop}"


def live_and_ended(calls: list[dict[str, Any]], counts: dict[str, int] | None) -> tuple[int, int]:
    """Live and ended calls, from the server's per-state ``counts`` (all calls, not one page) if it sent them."""
    if counts is None:
        counts = {}
        for c in calls:
            counts[c["state"]] = counts.get(c["state"], 0) + 1
    ended = counts.get("ended", 0)
    return sum(counts.values()) - ended, ended


def calls_table(calls: list[dict[str, Any]], now: float) -> list[str]:
    rows = []
    for c in calls:
        pb = c.get("current_playback")
        playing = f"{pb['id']} {progress(pb, 10)}" if pb else "-"
        rows.append([c["call_id"], c["state"], c["direction"][:3], _clip(c.get("from"), 28), c.get("codec") or "-",
                     _age(c.get("answered_at") or c.get("created_at"), now), playing])
    return table(rows, ["CALL ID", "STATE", "DIR", "FROM", "CODEC", "AGE", "PLAYING"])


def event_line(e: dict[str, Any]) -> str:
    data = e.get("data") or {}
    when = time.strftime("%H:%M:%S", time.localtime(e.get("occurred_at", time.time())))
    details = []
    for key in ("playback_id", "status", "reason", "ms_played", "cause", "by", "hangup_cause", "hangup_by", "source"):
        if data.get(key) not in (None, ""):
            details.append(f"{key}={_clip(data[key], 60)}")
    return f"#{e.get('seq', '?')} {when} {e.get('type', '?'):<18} {e.get('call_id', '-')} {' '.join(details)}".rstrip()


# -- commands ------------------------------------------------------------------
async def cmd_calls(api: Api, args: argparse.Namespace) -> int:
    body = await api.call("GET", "/v1/calls")
    calls = body.get("calls", [])
    if args.json:
        print(json.dumps(calls, indent=2))
        return 0
    for line in calls_table(calls, time.time()):
        print(line)
    live, ended = live_and_ended(calls, body.get("counts"))
    print(f"{live} call(s) live, {ended} ended")  # live as the console page counts them
    return 0


def loop_arg(value: str) -> int | str:
    """``--loop``: a count >= 1 or ``infinity``, as the API takes it (0 is refused there too)."""
    if value.strip().lower() in ("infinity", "inf", "forever"):
        return "infinity"
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a number of times >= 1, or 'infinity' to play until stopped")
    return n


async def cmd_play(api: Api, args: argparse.Namespace) -> int:
    source = args.source
    if source.startswith("media:"):  # the form calls/top/events print a stored media source in
        source = source[len("media:"):]
    body: dict[str, Any] = {"url": source} if "://" in source else {"media": source}
    if args.loop is not None:
        body["loop"] = args.loop
    pb = await api.call("POST", f"/v1/calls/{args.call}/playbacks", body)
    print(f"{pb['id']} {pb['state']} {pb['source']}")
    return 0


async def cmd_stop(api: Api, args: argparse.Namespace) -> int:
    """A playback id stops that playback; a call id stops everything playing on that call."""
    try:
        pb = await api.call("DELETE", f"/v1/playbacks/{args.id}")
        print(f"{pb['id']} {pb['state']}")
        return 0
    except ClientError as exc:
        if exc.exit_code != EXIT_REFUSED:
            raise
    try:
        body = await api.call("DELETE", f"/v1/calls/{args.id}/playbacks", stop="all")
    except ClientError as exc:
        if exc.status == 404:  # neither a playback nor a call: say so, not just "no call"
            raise ClientError(f"404 no playback or call with id {args.id!r}", EXIT_REFUSED, 404) from None
        raise
    stopped = body.get("stopped", [])
    for pb in stopped:
        print(f"{pb['id']} {pb['state']}")
    print(f"{len(stopped)} playback(s) stopped on {args.id}")
    return 0


async def cmd_events(api: Api, args: argparse.Namespace) -> int:
    """The recent history (the last ``--last``), then with ``--follow`` the live stream after it, no gap."""
    params = {"call_id": args.call} if args.call else {}
    body = await api.call("GET", "/v1/events", **params)  # Accept: application/json: the history
    history = body.get("events", [])
    for e in history[-args.last:] if args.last > 0 else []:
        print(json.dumps(e) if args.json else event_line(e), flush=True)
    if not args.follow:
        return 0
    if history:
        params["since"] = str(history[-1]["seq"])  # resume right after what was printed
    async for e in api.stream("/v1/events", **params):
        print(json.dumps(e) if args.json else event_line(e), flush=True)
    return 0


# -- top -----------------------------------------------------------------------
def top_frame(url: str, calls: list[dict[str, Any]], total: int, monitors: dict[str, dict[str, Any]],
              late_per_s: float | None, width: int, height: int, now: float,
              counts: dict[str, int] | None = None) -> list[str]:
    shown = f" ({len(calls)} shown)" if total > len(calls) else ""
    live, ended = live_and_ended(calls, counts)
    counts = counts or {}
    answered = counts.get("answered", sum(1 for c in calls if c["state"] == "answered"))
    playing = [c for c in calls if c.get("current_playback")]
    lines = [
        f"mediasrv top  {url}  {time.strftime('%H:%M:%S', time.localtime(now))}   q: quit",
        f"calls {live} live, {ended} ended{shown}   answered {answered}   playing {len(playing)}   "
        f"clock: {'-' if late_per_s is None else f'{late_per_s:.1f}'} late sub-slots/s",
        "",
    ]
    rows = []
    for c in calls:
        mon = monitors.get(c["call_id"]) or {}
        pacing = mon.get("pacing") or []
        last = pacing[-2]["max_lateness_ms"] if len(pacing) >= 2 else (pacing[-1]["max_lateness_ms"] if pacing else None)
        worst = max((p["max_lateness_ms"] for p in pacing), default=None)
        level = mon.get("level_dbfs")
        pb = c.get("current_playback")
        rows.append([
            _clip(c["call_id"], 24), c["state"][:8], _age(c.get("answered_at") or c.get("created_at"), now),
            "-" if last is None else f"{last:.2f}", "-" if worst is None else f"{worst:.2f}",
            "-" if level is None else f"{level:.0f}",
            (f"{_clip(pb['source'], 24)} {progress(pb, 16)}" if pb else "-"),
        ])
    lines += table(rows, ["CALL", "STATE", "AGE", "LATE ms", "MAX/60s", "dBFS", "PLAYBACK"])
    if not calls:
        lines.append("(no calls)")
    return [_clip(line, width) for line in lines[:height]]


def _late_ticks(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("mediasrv_clock_late_ticks_total "):
            return float(line.split()[-1])
    return None


async def cmd_top(api: Api, args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty() and not args.once
    stop = asyncio.Event()
    restore = None
    if tty and sys.stdin.isatty():
        import termios
        import tty as tty_mod

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        tty_mod.setcbreak(fd)

        def restore_term() -> None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

        restore = restore_term

        def on_key() -> None:
            if os.read(fd, 16)[:1] in (b"q", b"Q", b"\x03"):
                stop.set()

        asyncio.get_running_loop().add_reader(fd, on_key)
    if tty:
        sys.stdout.write("\x1b[?1049h\x1b[?25l")  # alternate screen, cursor hidden
    prev: tuple[float, float] | None = None
    try:
        while True:
            now = time.time()
            size = shutil.get_terminal_size((120, 40))
            rows = max(1, size.lines - 5)  # only what fits: each call resource costs the server's loop
            listed = await api.call("GET", "/v1/calls", limit=str(rows))
            calls, total = listed.get("calls", []), listed.get("total", 0)
            monitors: dict[str, dict[str, Any]] = {}
            for c in calls:
                if c["state"] == "answered":
                    with suppress(ClientError):  # the call may have ended in between
                        monitors[c["call_id"]] = await api.call("GET", f"/v1/calls/{c['call_id']}/pacing")
            late_per_s = None
            with suppress(ClientError):
                late = _late_ticks(await api.call("GET", "/metrics"))
                if late is not None and prev is not None and now > prev[0]:
                    late_per_s = (late - prev[1]) / (now - prev[0])
                prev = (now, late) if late is not None else prev
            frame = top_frame(api.url, calls, total, monitors, late_per_s, size.columns, size.lines, now,
                              listed.get("counts"))
            if tty:
                sys.stdout.write("\x1b[H" + "".join(line + "\x1b[K\r\n" for line in frame) + "\x1b[J")
            else:
                sys.stdout.write("\n".join(frame) + "\n")
            sys.stdout.flush()
            if args.once:
                return 0
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.interval)
            if stop.is_set():
                return 0
    finally:
        if tty:
            sys.stdout.write("\x1b[?25h\x1b[?1049l")
            sys.stdout.flush()
        if restore is not None:
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            restore()


COMMANDS = {"calls": cmd_calls, "top": cmd_top, "events": cmd_events, "play": cmd_play, "stop": cmd_stop}


def add_parsers(sub: Any) -> None:
    """The client sub-commands, for cli.py's parser."""

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--url", default=os.environ.get("MEDIASRV_URL", DEFAULT_URL),
                       help="the server's HTTP API (env MEDIASRV_URL; default %(default)s); token from MEDIASRV_API_TOKEN")
        return p

    p = common(sub.add_parser("calls", help="list the calls of a running server (a table)"))
    p.add_argument("--json", action="store_true", help="the call resources as JSON")
    p = common(sub.add_parser("top", help="live view of calls, playbacks with progress and pacing lateness"))
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p = common(sub.add_parser("events", help="print events (history, or --follow the live stream)"))
    p.add_argument("--follow", "-f", action="store_true", help="stream new events as they happen (SSE)")
    p.add_argument("--call", help="only this call's events")
    p.add_argument("--last", "-n", type=int, default=20, help="how many past events to print first (default 20)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = common(sub.add_parser("play", help="play a URL or a stored media name on a call"))
    p.add_argument("call", help="call id")
    p.add_argument("source", help="http(s) URL, or the name of a file in the media store")
    p.add_argument("--loop", type=loop_arg, help="times to play (>= 1), or 'infinity' to play until stopped")
    p = common(sub.add_parser("stop", help="stop a playback, or everything playing on a call"))
    p.add_argument("id", help="playback id or call id")


def run(args: argparse.Namespace) -> int:
    """Run one client command: its exit code, or a one-line error."""
    api = Api(args.url, os.environ.get("MEDIASRV_API_TOKEN") or None)

    async def main() -> int:
        async with api:
            return await COMMANDS[args.command](api, args)

    try:
        return asyncio.run(main())
    except ClientError as exc:
        print(f"mediasrv {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
