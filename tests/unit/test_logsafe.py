from mediasrv.ops.logsafe import SourceLimiter, clip


def test_clip_escapes_and_truncates() -> None:
    assert clip("abc") == "abc"
    assert clip("a\r\nb\x00") == "a\\r\\nb\\x00"
    long = "a" * 4096
    out = clip(long, 100)
    assert out.startswith("a" * 100) and out.endswith("(+3996 more)")
    assert "\n" not in clip(b"x\ny" * 1000)
    assert len(clip("\x00" * 5000, 100)) < 130


def test_source_limiter_bounds_lines_and_memory() -> None:
    lim = SourceLimiter(rate=1.0, burst=3, max_sources=10)
    got = [lim.allow("1.2.3.4", now=0.0)[0] for _ in range(10)]
    assert got == [True] * 3 + [False] * 7
    ok, dropped = lim.allow("1.2.3.4", now=1.0)
    assert ok and dropped == 7
    for i in range(100):
        lim.allow(f"10.0.0.{i}", now=2.0)
    assert len(lim._buckets) == 10
