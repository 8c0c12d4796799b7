"""The operator commands' formatting and argument checks (mediasrv/client.py, cli.py) and the access
log's level for their polling (api/access.py); the commands in a real terminal are in
tests/integration/test_cli.py."""

from __future__ import annotations

import argparse
import logging
import socket

import aiohttp
import pytest

from mediasrv.api.access import access_level
from mediasrv.cli import _serve_args
from mediasrv.client import live_and_ended, loop_arg, progress, top_frame, unreachable, user_agent
from mediasrv.config import env_name


def test_loop_takes_a_count_or_infinity_and_refuses_zero_like_the_api():
    assert loop_arg("3") == 3 and loop_arg("infinity") == "infinity" and loop_arg("forever") == "infinity"
    for bad in ("0", "-1", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match="'infinity' to play until stopped"):
            loop_arg(bad)


def test_a_repeating_playback_is_marked():
    pb = {"position_ms": 900, "source_duration_ms": 3000, "state": "playing"}
    assert progress({**pb, "loop": 1}, 10).endswith("0.9/3.0s")
    assert progress({**pb, "loop": "infinity"}, 10).endswith("0.9/3.0s loop ∞")
    assert progress({**pb, "loop": 3}, 10).endswith("0.9/3.0s loop x3")
    # the pass being played, once the server says how many are done
    assert progress({**pb, "loop": 3, "loops_done": 1, "state": "playing"}, 10).endswith("0.9/3.0s loop x3 pass 2")
    assert progress({**pb, "loop": "infinity", "loops_done": 0, "state": "playing"}, 10).endswith("loop ∞ pass 1")


def test_live_calls_are_counted_apart_from_ended_ones():
    calls = [{"call_id": f"c{i}", "state": "ended", "direction": "inbound"} for i in range(3)]
    calls.append({"call_id": "live", "state": "answered", "direction": "inbound"})
    assert live_and_ended(calls, None) == (1, 3)
    assert live_and_ended(calls[:1], {"answered": 1, "ringing": 2, "ended": 19}) == (3, 19)  # the server's counts win
    frame = top_frame("http://x", calls, 4, {}, None, 200, 40, 0.0, {"answered": 1, "ended": 3})
    assert frame[1].startswith("calls 1 live, 3 ended   answered 1")


async def test_unreachable_names_the_reason_without_connector_details():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await session.get(url)
    message = unreachable(url, info.value)
    assert message == f"cannot reach mediasrv at {url}: connection refused", message
    assert "ssl" not in message


def test_the_cli_polling_reads_log_at_debug_and_everything_else_at_info():
    agent = user_agent()
    assert agent.startswith("mediasrv-cli/")
    assert access_level("GET", 200, agent) == logging.DEBUG
    assert access_level("POST", 201, agent) == logging.INFO  # a command the operator gave
    assert access_level("GET", 401, agent) == logging.INFO  # a refusal is worth seeing
    assert access_level("GET", 200, "curl/8.5") == logging.INFO
    # the console page marks its polling reads the same way
    assert access_level("GET", 200, "Mozilla/5.0", "console") == logging.DEBUG
    assert access_level("POST", 200, "Mozilla/5.0", "console") == logging.INFO


def test_serve_help_names_every_env_variable_and_default():
    parser = argparse.ArgumentParser()
    _serve_args(parser)
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        assert env_name(action.dest) in (action.help or ""), (action.option_strings, action.help)
        assert "default" in (action.help or ""), (action.option_strings, action.help)
