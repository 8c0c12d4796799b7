"""Every parser of untrusted input stays linear on inputs built to make backtracking or quadratic
work show (tests/support/adversarial.py), and the SIP size limits answer as RFC 3261 says.

A case fails when the fastest of three runs takes more than 50 ms per 64 KB.  The first run is
timed alone and two more only when it is over the bound: the minimum of three is then the same
verdict at a third of the cost.  ``bench/parser_worst_case.py`` prints the slowest case per parser.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mediasrv.calls.controller import CallSettings as CoreSettings
from mediasrv.sip import message as sipmsg
from mediasrv.sip.message import ParseError, parse, parse_name_addr
from tests.support.adversarial import (
    SIZE,
    audio_cases,
    bxml_cases,
    digest_cases,
    dtmf_cases,
    invite,
    json_cases,
    log_cases,
    nul_display_invite,
    rtp_cases,
    sdp_cases,
    sip_cases,
    timed,
)
from tests.support.sip_harness import Harness, request

BOUND_S = 0.050  # per 64 KB of input

FAMILIES = {
    "sip": sip_cases,
    "sdp": sdp_cases,
    "digest": digest_cases,
    "rtp": rtp_cases,
    "dtmf": dtmf_cases,
    "json": json_cases,
    "bxml": bxml_cases,
    "audio": audio_cases,
    "logsafe": log_cases,
}


@pytest.mark.timeout(120)  # a regression to exponential backtracking fails here, not at the suite's 300 s
@pytest.mark.parametrize("family", list(FAMILIES))
def test_no_adversarial_input_takes_more_than_50ms_per_64kb(family: str) -> None:
    logging.disable(logging.CRITICAL)  # the SIP core logs what it refuses: not what is timed
    try:
        slow: list[str] = []
        count = 0
        for case in FAMILIES[family]():
            count += 1
            bound = BOUND_S * max(1.0, case.size / SIZE)
            first = timed(case.run, repeat=1)
            if first > bound:
                best = min(first, timed(case.run, repeat=2))
                if best > bound:
                    slow.append(f"{case.parser} {case.label}: {best * 1000:.1f} ms for {case.size} bytes")
    finally:
        logging.disable(logging.NOTSET)
    assert count > 0
    assert not slow, "\n".join(slow)


# -- the reported case ------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["from", "contact"])
def test_the_523_byte_nul_display_name_invite_is_a_quick_400(where: str) -> None:
    msg = nul_display_invite(where)
    assert len(msg) == 523 and b"\x00" in msg
    assert timed(lambda: _refused(msg)) < 0.005  # it held the CPU for more than 90 s
    with pytest.raises(ParseError) as err:
        _parse_all(msg)
    assert err.value.status == 400 and "name-addr" in err.value.reason
    assert "\x00" not in err.value.reason and len(err.value.reason) < 120  # clipped and escaped
    h = Harness()
    t0 = time.perf_counter()
    h.feed_bytes(msg)
    assert time.perf_counter() - t0 < 0.05
    assert h.statuses() == [400]  # refused statelessly, no call
    assert h.registry.active_count == 0
    h.feed(request("OPTIONS", call_id="after", branch="z9hG4bK-after"))
    assert h.statuses() == [200]  # and the server goes on answering


def _parse_all(data: bytes) -> None:
    parse(data).contacts()


def _refused(data: bytes) -> None:
    with pytest.raises(ParseError):
        _parse_all(data)


# -- long token runs followed by a character that fails the match ---------------------------

TOKEN_CHARS = "abcXYZ019-.!%*_+`'~"
FAILING = ["\x00", "\x7f", '"', "<", ">", "\\", "@", "[", "]", "{", "\u00e9", "\r", ",", ";", "=", ":", "?", "/"]


@st.composite
def token_run_then_failure(draw: st.DrawFn) -> str:
    """A run of tokens separated by blanks (the shape that made name-addr backtrack), with a
    failing character inside or at its end, and maybe a URI after it."""
    words = draw(st.lists(st.text(TOKEN_CHARS, min_size=1, max_size=40), min_size=1, max_size=60))
    seps = draw(st.lists(st.sampled_from([" ", "\t", "  ", ""]), min_size=len(words), max_size=len(words)))
    run = "".join(w + s for w, s in zip(words, seps, strict=True)) * draw(st.integers(1, 20))
    bad = draw(st.sampled_from(FAILING))
    cut = draw(st.integers(0, len(run)))
    run = run[:cut] + bad + run[cut:] if draw(st.booleans()) else run + bad
    return run + draw(st.sampled_from(["", " <sip:user@host>", "<sip:u@h>;tag=1", ";tag=1"]))


class TooSlow(Exception):
    pass


@contextmanager
def interrupted_after(seconds: float) -> Iterator[None]:
    """Raise TooSlow inside whatever runs longer than *seconds* (a regex match too: the re engine
    checks for signals), then give back pytest-timeout's own alarm with the time it had left."""

    def on_alarm(signum: int, frame: object) -> None:
        raise TooSlow(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    left, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    t0 = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if left > 0:
            signal.setitimer(signal.ITIMER_REAL, max(left - (time.monotonic() - t0), 0.001), interval)


def _parse_in(where: str, text: str) -> None:
    if where == "name-addr":
        parse_name_addr(text)
        return
    msg = {
        "from": lambda: invite(from_=text),
        "to": lambda: invite(to=text),
        "contact": lambda: invite(contact=text),
        "via": lambda: invite(via="SIP/2.0/UDP " + text),
        "route": lambda: invite(extra=f"Route: {text}\r\n"),
    }[where]()
    m = parse(msg)
    m.contacts()
    m.get_all("route")


# No shrinking: against an exponential matcher every shrink step would be another slow example.
@settings(max_examples=150, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(text=token_run_then_failure(), where=st.sampled_from(["from", "to", "contact", "via", "route", "name-addr"]))
def test_token_runs_with_a_failing_character_are_refused_quickly(text: str, where: str) -> None:
    t0 = time.perf_counter()
    with interrupted_after(1.0):
        try:
            _parse_in(where, text)
        except ParseError as exc:
            assert exc.status == 400
    assert time.perf_counter() - t0 < BOUND_S


# -- limits -----------------------------------------------------------------------------------


def _status_of(data: bytes) -> int:
    with pytest.raises(ParseError) as err:
        parse(data)
    return err.value.status


def test_over_the_limits_is_413_414_513_or_400() -> None:
    assert _status_of(invite(extra="X-Big: " + "a" * 70000 + "\r\n")) == 513  # message
    assert _status_of(invite(extra="".join(f"X-{i}: {'a' * 200}\r\n" for i in range(170)))) == 513  # headers
    assert _status_of(invite(extra="".join(f"X-{i}: a\r\n" for i in range(sipmsg.MAX_HEADERS)))) == 400  # count
    assert _status_of(invite(extra="X-Long: " + "a" * sipmsg.MAX_LINE + "\r\n")) == 400  # field
    assert _status_of(invite(extra="X-Folded: a" + "\r\n " + "b" * (sipmsg.MAX_LINE // 2) + "\r\n "
                             + "c" * (sipmsg.MAX_LINE // 2) + "\r\n")) == 400  # long once unfolded
    assert _status_of(invite(ruri="sip:" + "a" * sipmsg.MAX_URI + "@h")) == 414  # Request-URI
    assert _status_of(invite(contact="<sip:" + "a" * sipmsg.MAX_URI + "@h>")) == 400  # URI in a header
    assert _status_of(invite(body=b"v=0\r\n" * 7000)) == 413  # body
    over_udp = invite().replace(b"Content-Length: 0\r\n", b"") + b"x" * (sipmsg.MAX_BODY_BYTES + 1)
    assert _status_of(over_udp) == 413  # no Content-Length over UDP: the rest of the datagram
    # just under every limit parses
    near = invite(
        extra="".join(f"X-{i}: {'a' * 100}\r\n" for i in range(sipmsg.MAX_HEADERS - 12)),
        ruri="sip:" + "a" * (sipmsg.MAX_URI - 10) + "@h",
    )
    assert len(near) < sipmsg.MAX_HEADER_BYTES and parse(near).uri.host == "h"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (invite(ruri="sip:" + "a" * 3000 + "@h"), 414, "Request-URI Too Long"),
        (invite(body=b"v=0\r\n" * 7000), 413, "Request Entity Too Large"),
        (invite(extra="X-Big: " + "a" * 40000 + "\r\n"), 513, "Message Too Large"),
    ],
)
def test_the_core_answers_over_limit_requests_statelessly(data: bytes, status: int, reason: str) -> None:
    h = Harness(CoreSettings())
    h.feed_bytes(data)
    sent = [d for _, _, d, _ in h.sent]
    assert len(sent) == 1 and sent[0].startswith(f"SIP/2.0 {status} {reason}".encode())
    assert h.core.stats["too_large"] == 1 and h.core.stats["malformed"] == 1
    assert h.registry.active_count == 0


def test_warnings_about_one_source_are_clipped_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()
    bad = invite(from_="x" * 4000 + "\x00\x1b[31m <sip:a@b>")
    with caplog.at_level(logging.WARNING, logger="mediasrv.sip"):
        for _ in range(50):
            h.feed_bytes(bad)
    lines = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert 1 <= len(lines) <= 3  # one source: a burst of 3, refilled at 0.2/s
    assert all(len(line) < 400 and "\x1b" not in line and "\x00" not in line for line in lines)
    assert h.core.stats["malformed"] == 50  # every one is still counted


def test_a_header_name_from_the_api_cannot_end_in_a_newline() -> None:
    from mediasrv.sip.core import check_user_headers

    assert check_user_headers({"X-Tenant": "a"}) is None
    for name in ("X-Tenant\n", "X-Tenant\r\nVia: x", "X Tenant", ""):
        assert check_user_headers({name: "a"}) is not None
