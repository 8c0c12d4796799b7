"""The safe fetcher against a real aiohttp origin: address policy, redirects, credentials, limits, timeouts."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mediasrv.content.errors import SourceError
from mediasrv.content.fetch import AddressPolicy, Fetcher, FetchSettings, public_url
from tests.support.http_origin import Origin, tone, wav, wav_header

LOOPBACK = ["127.0.0.0/8", "::1/128"]


@pytest.fixture
async def origin():
    o = await Origin().start()
    yield o
    await o.close()


def fetcher(**kw) -> Fetcher:
    kw.setdefault("allow_cidrs", LOOPBACK)
    return Fetcher(FetchSettings(**kw))


async def fetch_all(f: Fetcher, url: str, **kw) -> tuple[int, bytes, dict[str, str]]:
    try:
        async with await f.open(url, **kw) as resp:
            body = b"".join([c async for c in resp.chunks()])
            return resp.status, body, dict(resp.headers)
    finally:
        await f.close()


async def reason_of(f: Fetcher, url: str, **kw) -> SourceError:
    with pytest.raises(SourceError) as info:
        await fetch_all(f, url, **kw)
    return info.value


# -- the address policy -------------------------------------------------------------------------
@pytest.mark.parametrize("addr", ["169.254.169.254", "169.254.1.1", "fe80::1", "fd00:ec2::254", "100.100.100.200",
                                  "::ffff:169.254.169.254"])
def test_link_local_and_metadata_always_refused(addr):
    everything = AddressPolicy.from_cidrs(["0.0.0.0/0", "::/0"])
    assert everything.refusal(addr) is not None


@pytest.mark.parametrize("addr", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.5.5", "100.64.0.1", "::1",
                                  "fc00::1", "0.0.0.0", "224.0.0.1"])
def test_private_loopback_refused_by_default(addr):
    assert AddressPolicy().refusal(addr) is not None


def test_allow_and_deny_lists():
    policy = AddressPolicy.from_cidrs(allow=["10.0.0.0/8", "127.0.0.0/8"], deny=["10.9.0.0/16", "8.8.8.0/24"])
    assert policy.refusal("10.1.2.3") is None
    assert policy.refusal("10.9.1.1") == "in fetch_deny_cidrs"  # deny beats allow
    assert policy.refusal("8.8.8.8") == "in fetch_deny_cidrs"
    assert policy.refusal("8.8.4.4") is None  # public
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("192.168.1.1") is not None


def test_public_url_hides_credentials_and_query():
    assert public_url("http://u:secret@h.example/a.wav?sig=abc#x") == "http://h.example/a.wav"


# -- fetching -----------------------------------------------------------------------------------
async def test_plain_fetch_sends_user_agent(origin):
    body = wav(tone(0.2))
    url = origin.static("/a.wav", body)
    status, got, _ = await fetch_all(fetcher(), url)
    assert status == 200 and got == body
    assert "mediasrv" in origin.headers_of("/a.wav")[0]["User-Agent"]


async def test_loopback_refused_without_allow_list(origin):
    url = origin.static("/a.wav", b"x")
    err = await reason_of(fetcher(allow_cidrs=[]), url)
    assert err.reason == "forbidden_address"
    err = await reason_of(fetcher(allow_cidrs=[]), origin.url("/a.wav", host="localhost"))  # after DNS
    assert err.reason == "forbidden_address" and "localhost" in err.message
    assert origin.hits("/a.wav") == 0


async def test_metadata_address_refused_even_when_everything_allowed(origin):
    f = fetcher(allow_cidrs=["0.0.0.0/0", "::/0"])
    err = await reason_of(f, "http://169.254.169.254/latest/meta-data/")
    assert err.reason == "forbidden_address"
    err = await reason_of(f, "http://[fd00:ec2::254]/latest/")
    assert err.reason == "forbidden_address"


async def test_redirect_to_metadata_refused(origin):
    url = origin.redirect("/r", "http://169.254.169.254/latest/meta-data/iam")
    err = await reason_of(fetcher(), url)
    assert err.reason == "forbidden_address"
    assert origin.hits("/r") == 1


async def test_redirects_followed_up_to_five(origin):
    body = wav(tone(0.1))
    origin.static("/final.wav", body)
    for i in range(5):
        origin.redirect(f"/r{i}", f"/r{i + 1}" if i < 4 else "/final.wav", code=(301, 302, 303, 307, 308)[i])
    status, got, _ = await fetch_all(fetcher(), origin.url("/r0"))
    assert status == 200 and got == body
    origin.redirect("/r5", "/r0")
    err = await reason_of(fetcher(), origin.url("/r5"))  # six redirects before the body
    assert err.reason == "too_many_redirects"


async def test_redirect_loop(origin):
    origin.redirect("/a", "/b")
    origin.redirect("/b", "/a")
    err = await reason_of(fetcher(), origin.url("/a"))
    assert err.reason == "too_many_redirects"
    assert origin.hits("/a") + origin.hits("/b") == 6


async def test_credentials_only_to_the_same_origin(origin):
    body = wav(tone(0.1))
    origin.echo_auth("/private.wav", body)
    status, got, _ = await fetch_all(fetcher(), origin.url("/private.wav"), username="alice", password="s3cret")
    assert status == 200 and got == body
    # same origin redirect: credentials kept
    origin.redirect("/same", "/private.wav")
    status, _, _ = await fetch_all(fetcher(), origin.url("/same"), username="alice", password="s3cret")
    assert status == 200
    # another origin (localhost is another host name): credentials dropped, so the target says 401
    origin.redirect("/elsewhere", origin.url("/private.wav", host="localhost"))
    err = await reason_of(fetcher(), origin.url("/elsewhere"), username="alice", password="s3cret")
    assert err.reason == "http_401"
    assert "s3cret" not in err.message and "alice" not in err.message
    sent = origin.headers_of("/private.wav")
    assert [("Authorization" in h) for h in sent] == [True, True, False]


@pytest.mark.parametrize("code", [404, 500, 403])
async def test_http_errors(origin, code):
    err = await reason_of(fetcher(), origin.status(f"/e{code}", code))
    assert err.reason == f"http_{code}"


async def test_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        err = await reason_of(fetcher(), f"http://127.0.0.1:{port}/x.wav")
    assert err.reason == "unreachable"


async def test_no_headers_in_time(origin):
    url = origin.stall("/stall", 5)
    started = asyncio.get_running_loop().time()
    err = await reason_of(fetcher(first_byte_timeout_s=0.3, total_timeout_s=5), url)
    assert err.reason == "fetch_timeout"
    assert asyncio.get_running_loop().time() - started < 2


async def test_slow_drip_hits_total_timeout(origin):
    url = origin.drip("/drip.wav", wav(tone(1.0)), piece=100, every_s=0.05)
    started = asyncio.get_running_loop().time()
    err = await reason_of(fetcher(total_timeout_s=0.5), url)
    assert err.reason == "fetch_timeout"
    assert asyncio.get_running_loop().time() - started < 2


async def test_stalled_body(origin):
    url = origin.drip("/stuck.wav", wav(tone(1.0)), piece=1000, every_s=3)
    err = await reason_of(fetcher(read_idle_timeout_s=0.3), url)
    assert err.reason == "fetch_timeout" and "stalled" in err.message


async def test_truncated_body(origin):
    url = origin.truncated("/cut.wav", wav(tone(1.0)), send=3000)
    err = await reason_of(fetcher(), url)
    assert err.reason == "truncated"


async def test_declared_too_large(origin):
    url = origin.static("/big.wav", bytes(50_000))
    err = await reason_of(fetcher(max_bytes=10_000), url)
    assert err.reason == "too_large" and "declared" in err.message


async def test_endless_chunked_body_stops_at_the_limit(origin):
    url = origin.endless("/endless.wav", wav_header())
    err = await reason_of(fetcher(max_bytes=1 << 20), url)
    assert err.reason == "too_large"
    await asyncio.sleep(0.2)
    assert origin.sent["/endless.wav"] < 16 << 20  # the origin was cut off, not drained for 10 GB
