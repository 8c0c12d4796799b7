"""``/console``: the live page (calls, playbacks, pacing plots, level meters) and its login form.

Why a cookie: a browser's ``EventSource`` cannot add an ``Authorization`` header, so the page
logs in once through a form that sets the ``mediasrv_token`` cookie (HttpOnly, SameSite=Strict);
auth.py accepts that cookie for GET requests only, so it opens reading, never commands.  The
page is one HTML file of package data (plain JS and canvas, no build step, nothing from a CDN).
"""

from __future__ import annotations

import html
from importlib import resources

from aiohttp import web

from ..ops.logsafe import clip
from .auth import COOKIE, same_secret
from .errors import ApiError

LOGIN_PATH = "/console/login"
CONSOLE_PATHS = ("/console", LOGIN_PATH)


def _page() -> str:
    return resources.files("mediasrv").joinpath("web/console.html").read_text(encoding="utf-8")


def _login_form(message: str = "") -> str:
    note = f'<p class="err">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>mediasrv console: log in</title>
<style>body{{font:15px system-ui,sans-serif;background:#11151c;color:#dde3ea;display:flex;justify-content:center;
padding-top:15vh}}form{{background:#1b222c;padding:24px 28px;border-radius:8px}}input{{font:inherit;padding:6px;
width:22em;margin:8px 0}}button{{font:inherit;padding:6px 14px}}.err{{color:#ff7b72}}</style></head>
<body><form method="post" action="{LOGIN_PATH}"><h2>mediasrv console</h2>{note}
<label>API token<br><input type="password" name="token" autofocus autocomplete="current-password"></label><br>
<button type="submit">Log in</button></form></body></html>"""


def add_routes(app: web.Application, token: str | None) -> None:
    """Serve the page; with a token configured, only to a browser holding the login cookie."""

    def authorized(request: web.Request) -> bool:
        return not token or same_secret(request.cookies.get(COOKIE, ""), token)

    async def console(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.Response(status=401, text=_login_form(), content_type="text/html")
        return web.Response(text=_page(), content_type="text/html", headers={"Cache-Control": "no-store"})

    async def login(request: web.Request) -> web.Response:
        # a malformed or oversized form is the API's 4xx (the native error shape), never a 500
        if request.content_length is not None and request.content_length > 4096:
            raise ApiError(413, "body_too_large", "the login form is at most 4096 bytes", field="body")
        try:
            form = await request.post()
        except (ValueError, UnicodeDecodeError, AssertionError) as exc:
            raise ApiError(400, "bad_form", f"malformed login form: {clip(exc, 200)}", field="body") from None
        given = form.get("token")
        if not token:
            raise web.HTTPSeeOther("/console")
        if not isinstance(given, str) or not given or not same_secret(given, token):
            return web.Response(status=401, text=_login_form("wrong token"), content_type="text/html")
        resp = web.HTTPSeeOther("/console")
        resp.set_cookie(COOKIE, given, httponly=True, samesite="Strict", path="/",
                        secure=request.secure)
        raise resp

    async def login_form(request: web.Request) -> web.Response:
        return web.Response(text=_login_form(), content_type="text/html")

    app.add_routes([web.get("/console", console), web.get(LOGIN_PATH, login_form), web.post(LOGIN_PATH, login)])
