"""Command line: ``mediasrv serve``, ``demo`` and ``keys``; ``calls``, ``top``, ``events``, ``play`` and
``stop`` talk to a running server (client.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from .config import ConfigError, load_settings, unknown_env_warnings
from .ops.logs import setup_logging
from .version import version


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
    p.add_argument("--rtp-ports", dest="rtp_ports", help="RTP port range LO-HI (env MEDIASRV_RTP_PORTS; default 20000-29999)")
    p.add_argument("--config", help="TOML config file (env MEDIASRV_CONFIG; default none)")
    p.add_argument("--data-dir", dest="data_dir", help="data directory (env MEDIASRV_DATA_DIR; default ./data)")
    p.add_argument("--max-calls", dest="max_calls", help="answer 503 beyond this many calls (env MEDIASRV_MAX_CALLS; default unlimited)")
    p.add_argument("--webhook-url", dest="webhook_url", help="POST events here (env MEDIASRV_WEBHOOK_URL; default none)")
    p.add_argument("--ring", dest="auto_answer", action="store_const", const=False,
                   help="ring and wait for an answer command instead of auto-answering (env MEDIASRV_AUTO_ANSWER=false; "
                        "default auto-answer)")
    p.add_argument("--no-silence", dest="send_silence", action="store_const", const=False,
                   help="send no RTP while nothing plays (env MEDIASRV_SEND_SILENCE=false; default silence is sent)")
    p.add_argument("--rtp-timeout", dest="rtp_timeout_s", help="hang up after this many seconds without inbound RTP/RTCP, 0 = off (env MEDIASRV_RTP_TIMEOUT_S; default 30)")
    p.add_argument("--symmetric-rtp", dest="symmetric_rtp", action="store_const", const=True,
                   help="send RTP to where the peer's RTP comes from (NAT; env MEDIASRV_SYMMETRIC_RTP; default off)")
    p.add_argument("--realtime-priority", dest="realtime_priority", metavar="N",
                   help="run the media clock's thread under SCHED_FIFO priority N (1-99; env MEDIASRV_REALTIME_PRIORITY; default off)")
    p.add_argument("--sip-allow-cidrs", dest="sip_allow_cidrs",
                   help="networks that may send INVITEs, comma-separated (env MEDIASRV_SIP_ALLOW_CIDRS; default loopback)")
    p.add_argument("--node-id", dest="node_id", help="this node's id in call/playback ids (env MEDIASRV_NODE_ID; default <host>-<SIP port>)")
    p.add_argument("--cluster-dir", dest="cluster_dir", help="shared directory where live nodes lock their node id (env MEDIASRV_CLUSTER_DIR; default none)")
    p.add_argument("--media-dir", dest="media_dir", help="named-media store directory (env MEDIASRV_MEDIA_DIR; default <data-dir>/media)")
    p.add_argument("--asyncio", dest="use_uvloop", action="store_const", const=False, help="use asyncio's own loop, not uvloop (env MEDIASRV_USE_UVLOOP=false; default uvloop)")
    p.add_argument("--log-level", dest="log_level", metavar="LEVEL",
                   help="debug, info, warning, error or critical (env MEDIASRV_LOG_LEVEL; default info)")
    p.add_argument("--log-format", dest="log_format", metavar="FORMAT",
                   help="text or json: one JSON object per line (env MEDIASRV_LOG_FORMAT; default text)")
    p.add_argument("--no-access-log", dest="access_log", action="store_const", const=False,
                   help="no line per HTTP request (env MEDIASRV_ACCESS_LOG=false; default one line per request)")


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
    cl = sub.add_parser("cluster", help="Kamailio in front of N nodes on this host (one per core); Ctrl-C stops all")
    cl.add_argument("--nodes", type=int, default=len(os.sched_getaffinity(0)), help="how many nodes (default: one per core)")
    cl.add_argument("--sip", default="127.0.0.1:5060", help="Kamailio's SIP HOST:PORT, the one callers use")
    cl.add_argument("--node-sip-base", type=int, default=5071, help="node i's SIP port is this + i (default 5071)")
    cl.add_argument("--http-base", type=int, default=8081, help="node i's HTTP port is this + i (default 8081)")
    cl.add_argument("--rtp-ports", default="20000-29999", help="RTP range LO-HI, split between the nodes")
    cl.add_argument("--data-dir", default="./data", help="nodes/<node_id>/ per node; media/ and cluster/ shared")
    cl.add_argument("--pin", action="store_true", help="pin node i to CPU i (os.sched_setaffinity)")
    cl.add_argument("--ping-interval", type=int, default=2, help="Kamailio's OPTIONS probe interval, s")
    cl.add_argument("--log-dir", help="write each process's output to <dir>/<name>.log instead of the terminal")
    cl.add_argument("serve_args", nargs=argparse.REMAINDER, help="after --: passed to every node's `mediasrv serve`")
    from . import client

    client.add_parsers(sub)
    args = parser.parse_args(argv)

    if args.command in client.COMMANDS:
        return client.run(args)
    if args.command == "keys":
        return _keys(args)
    if args.command == "cluster":
        return _cluster(args)

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
    from .cluster.identity import NodeIdError
    from .server import run_forever

    try:
        _run(run_forever(settings), settings.use_uvloop)
    except NodeIdError as exc:
        print(f"mediasrv: cannot start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"mediasrv: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .cluster.launcher import ClusterError, ClusterPlan, run

    extra = [a for a in args.serve_args if a != "--"] if args.serve_args else []
    try:
        plan = ClusterPlan(nodes=args.nodes, sip=args.sip, http_base=args.http_base, node_sip_base=args.node_sip_base,
                           rtp_ports=args.rtp_ports, data_dir=Path(args.data_dir), pin=args.pin,
                           ping_interval_s=args.ping_interval)
    except (ClusterError, ConfigError) as exc:
        print(f"mediasrv cluster: {exc}", file=sys.stderr)
        return 2
    return run(plan, extra, Path(args.log_dir) if args.log_dir else None)


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
