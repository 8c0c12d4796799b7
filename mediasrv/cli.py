"""Command line: ``mediasrv serve``, ``demo`` and ``keys``; ``calls``, ``top``, ``events``, ``play`` and
``stop`` talk to a running server (client.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from .config import ConfigError, load_settings, unknown_env_warnings
from .logs import setup_logging


def _run(coro: Coroutine[Any, Any, Any], use_uvloop: bool) -> Any:
    if use_uvloop:
        try:
            import uvloop

            return uvloop.run(coro)
        except ImportError:  # pragma: no cover - uvloop is a dependency, but stay usable without it
            pass
    return asyncio.run(coro)


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sip", help="SIP HOST:PORT, UDP and TCP (env MEDIASRV_SIP; default 127.0.0.1:5060)")
    p.add_argument("--http", help="HTTP API HOST:PORT (env MEDIASRV_HTTP; default 127.0.0.1:8080)")
    p.add_argument("--rtp-ports", dest="rtp_ports", help="RTP port range LO-HI (env MEDIASRV_RTP_PORTS)")
    p.add_argument("--config", help="TOML config file (env MEDIASRV_CONFIG)")
    p.add_argument("--data-dir", dest="data_dir", help="data directory (env MEDIASRV_DATA_DIR)")
    p.add_argument("--max-calls", dest="max_calls", help="answer 503 beyond this many calls")
    p.add_argument("--webhook-url", dest="webhook_url", help="POST events here (env MEDIASRV_WEBHOOK_URL)")
    p.add_argument("--ring", dest="auto_answer", action="store_const", const=False,
                   help="ring and wait for an answer command instead of auto-answering")
    p.add_argument("--no-silence", dest="send_silence", action="store_const", const=False,
                   help="send no RTP while nothing plays")
    p.add_argument("--rtp-timeout", dest="rtp_timeout_s", help="hang up after this many seconds without inbound RTP/RTCP (default 30; 0 = off)")
    p.add_argument("--symmetric-rtp", dest="symmetric_rtp", action="store_const", const=True,
                   help="send RTP to where the peer's RTP comes from (NAT; env MEDIASRV_SYMMETRIC_RTP)")
    p.add_argument("--realtime-priority", dest="realtime_priority", metavar="N",
                   help="run the media clock's thread under SCHED_FIFO priority N (1-99; env MEDIASRV_REALTIME_PRIORITY)")
    p.add_argument("--sip-allow-cidrs", dest="sip_allow_cidrs",
                   help="networks that may send INVITEs, comma-separated (env MEDIASRV_SIP_ALLOW_CIDRS; default loopback)")
    p.add_argument("--asyncio", dest="use_uvloop", action="store_const", const=False, help="use asyncio's own loop, not uvloop")
    p.add_argument("--log-level", dest="log_level", metavar="LEVEL",
                   help="debug, info, warning, error or critical (env MEDIASRV_LOG_LEVEL; default info)")
    p.add_argument("--log-format", dest="log_format", metavar="FORMAT",
                   help="text or json: one JSON object per line (env MEDIASRV_LOG_FORMAT; default text)")
    p.add_argument("--no-access-log", dest="access_log", action="store_const", const=False,
                   help="no line per HTTP request (env MEDIASRV_ACCESS_LOG=false)")


def version() -> str:
    """The installed distribution's version (package metadata), or the source tree's."""
    from importlib import metadata

    try:
        return metadata.version("mediasrv")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mediasrv", description="SIP/RTP media server for playback on live calls")
    parser.add_argument("--version", action="version", version=f"mediasrv {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_args(sub.add_parser("serve", help="run the server"))
    demo = sub.add_parser("demo", help="self-contained demo: call ourselves, play a prompt, record it")
    demo.add_argument("--out", default="demo-received.wav", help="where to write what the caller heard")
    demo.add_argument("--codec", default="PCMU", choices=["PCMU", "PCMA"])
    demo.add_argument("--asyncio", dest="use_uvloop", action="store_false", default=True)
    keys = sub.add_parser("keys", help="print the public keys that verify our webhook signatures (ACS RS256 JWK, Telnyx Ed25519)")
    keys.add_argument("--config", help="TOML config file (env MEDIASRV_CONFIG)")
    keys.add_argument("--data-dir", dest="data_dir", help="data directory holding keys/ (env MEDIASRV_DATA_DIR)")
    from . import client

    client.add_parsers(sub)
    args = parser.parse_args(argv)

    if args.command in client.COMMANDS:
        return client.run(args)
    if args.command == "keys":
        return _keys(args)

    if args.command == "demo":
        from .demo import run_demo

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return int(_run(run_demo(args.out, args.codec), args.use_uvloop) or 0)

    flags = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        settings = load_settings(flags)
    except ConfigError as exc:
        print(f"mediasrv: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    for line in unknown_env_warnings():
        logging.getLogger("mediasrv.config").warning("%s", line)
    from .server import run_forever

    try:
        _run(run_forever(settings), settings.use_uvloop)
    except OSError as exc:
        print(f"mediasrv: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _keys(args: argparse.Namespace) -> int:
    """Print the webhook public keys (made on first use, like ``serve`` would).

    ACS's RS256 key first (its kid and JWK), the Telnyx Ed25519 key last (base64 of 32 bytes, the
    last line, so ``mediasrv keys | tail -1`` stays the Telnyx key).
    """
    from .api.signing import Ed25519Signer, RsaJwtSigner

    try:
        settings = load_settings({"config": args.config, "data_dir": args.data_dir})
        rsa_signer = RsaJwtSigner.load_or_create(settings.data_dir)
        signer = Ed25519Signer.load_or_create(settings.data_dir)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"mediasrv: {exc}", file=sys.stderr)
        return 2
    print(f"# ACS callback JWT key, RS256 ({rsa_signer.path}); served as JWKS at GET /calling/keys")
    print(f"kid {rsa_signer.kid}")
    print(json.dumps(rsa_signer.jwk))
    print(f"# Ed25519 webhook key ({signer.path}); Telnyx: telnyx.Telnyx(public_key=...) or TELNYX_PUBLIC_KEY")
    print(signer.public_key_b64)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
