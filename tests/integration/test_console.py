"""The live page in headless Chromium (Debian's): login, a SIPp call, a playback, the pacing plot on screen."""

from __future__ import annotations

import io
import os
import shutil

import aiohttp
import numpy as np
import pytest
from PIL import Image

from tests.support.audio import chirp_signal, wav_bytes
from tests.support.cdp import Browser
from tests.support.server import hang_up_all, start_server
from tests.support.sipp import answered_calls, sipp_caller, start_sipp

pytestmark = pytest.mark.integration


TOKEN = "console-secret"
BAR_COLOURS = np.array([(0x3F, 0xB9, 0x50), (0xD2, 0x99, 0x22), (0xF8, 0x51, 0x49)])  # the plot's bars


async def test_console_shows_call_playback_and_pacing_plot(tmp_path):
    r = await start_server(tmp_path, api_token=TOKEN)
    (r.data_dir / "media" / "chirp.wav").write_bytes(wav_bytes(chirp_signal(20.0), 8000))
    sipp = await start_sipp(sipp_caller(r))
    try:
        async with aiohttp.ClientSession() as s:
            # without the cookie: the login form, 401, for the page; JSON 401 for the API
            async with s.get(f"{r.http}/console") as resp:
                assert resp.status == 401 and 'name="token"' in await resp.text()
            async with s.post(f"{r.http}/console/login", data={"token": "wrong"}, allow_redirects=False) as resp:
                assert resp.status == 401 and "wrong token" in await resp.text()
        async with Browser() as page:
            await page.navigate(f"{r.http}/console")
            await page.evaluate("document.querySelector('input[name=token]').value = 'wrong';"
                                "document.forms[0].submit()")
            await page.wait_for("document.body.innerText.includes('wrong token')", what="the refusal")
            await page.evaluate(f"document.querySelector('input[name=token]').value = '{TOKEN}';"
                                "document.forms[0].submit()")
            await page.wait_for("location.pathname === '/console' && document.getElementById('calls') !== null",
                                what="the console after login")
            await page.wait_for("document.getElementById('conn').textContent === 'live'", what="the event stream")

            call_id = (await answered_calls(r, 1))[0].call_id
            await page.wait_for(f"!!document.querySelector('[data-call-id=\"{call_id}\"]')", what="the call's card")
            async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s, \
                    s.post(f"{r.http}/v1/calls/{call_id}/playbacks", json={"media": "chirp.wav"}) as resp:
                assert resp.status == 201
                playback_id = (await resp.json())["id"]
            text = await page.wait_for(
                "(t => t && t.includes('media:chirp.wav') && / \\d+\\.\\d \\/ 20\\.0 s/.test(t) && t)"
                "(document.querySelector('.pb-text.playing') && document.querySelector('.pb-text.playing').textContent)",
                what="the playback with its progress")
            assert playback_id in text
            await page.wait_for("document.getElementById('events').textContent.includes('playback.started')",
                                what="the SSE event in the log")
            await page.wait_for(f"(m => m && m.pacing.length >= 3 && m.level_dbfs !== null)(monitors.get('{call_id}'))",
                                what="three seconds of pacing and a level")
            await page.wait_for("parseFloat(document.querySelector('.meter > div').style.height) > 20",
                                what="the level meter")
            rect = await page.evaluate("(b => ({x: b.x, y: b.y, w: b.width, h: b.height}))"
                                       "(document.querySelector('canvas.pacing').getBoundingClientRect())")
            png = await page.screenshot()
        (tmp_path / "console.png").write_bytes(png)
        if os.environ.get("MEDIASRV_CONSOLE_PNG"):  # how docs/console.png is made
            shutil.copy(tmp_path / "console.png", os.environ["MEDIASRV_CONSOLE_PNG"])
        img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        x, y, w, h = (round(rect[k]) for k in ("x", "y", "w", "h"))
        assert w == 600 and h == 120, rect
        plot = img[y:y + h, x:x + w]
        background = np.array((0x0B, 0x0E, 0x13))
        assert (np.abs(plot - background).sum(axis=2) > 30).sum() > 500, "the plot has axes and labels"
        bars = np.min([np.abs(plot - c).sum(axis=2) for c in BAR_COLOURS], axis=0) < 20
        assert bars[:, 40:].sum() > 40, f"the plot shows pacing bars ({bars.sum()} bar pixels)"
    finally:
        await hang_up_all(r)
        rc, out = await sipp
        await r.server.stop()
    assert rc == 0, out[-2000:]


async def test_console_snapshot_settles_for_a_one_shot_headless_capture(tmp_path):
    """``/console?snapshot=1`` fetches once and opens no stream, so ``chromium --headless
    --virtual-time-budget`` exits by itself with the call on the page (live, it never settles);
    and the page's reads are logged at DEBUG, not INFO (it polls every second when live)."""
    import asyncio
    import logging

    from tests.support.cdp import FLAGS

    r = await start_server(tmp_path)  # loopback, no token: the page opens without a login
    sipp = await start_sipp(sipp_caller(r))
    access: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = access.append  # type: ignore[method-assign]
    logger = logging.getLogger("mediasrv.access")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    profile = tmp_path / "profile"
    try:
        call_id = (await answered_calls(r, 1))[0].call_id
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        assert exe, "chromium is not installed; run bash scripts/test.sh (it installs Debian's chromium)"
        proc = await asyncio.create_subprocess_exec(
            exe, *(f for f in FLAGS if not f.startswith("--remote-debugging")), f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
            f"{r.http}/console?snapshot=1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError("chromium did not settle on the snapshot page within 60 s") from None
        dom = out.decode()
        assert proc.returncode == 0, dom[-2000:]
        assert f'data-call-id="{call_id}"' in dom, dom[-3000:]
        assert 'class="snapshot">snapshot ' in dom, "the header says it is a snapshot, not 'connecting'"
        reads = [rec for rec in access if '"GET /v1/calls' in rec.getMessage()]
        assert reads, [rec.getMessage() for rec in access]
        assert all(rec.levelno == logging.DEBUG for rec in reads), [(rec.levelname, rec.getMessage()) for rec in reads]
        page = [rec for rec in access if '"GET /console' in rec.getMessage()]
        assert page and page[0].levelno == logging.INFO  # someone opened the page: worth a line
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        await hang_up_all(r)
        rc, out_sipp = await sipp
        await r.server.stop()
    assert rc == 0, out_sipp[-2000:]
