"""The live dashboard (open page; the data behind it needs a signed-in user's token): `GET /dashboard`.

One static page (HTML, vanilla JS, CSS: no build step) from `serving/static/dashboard`, installed with the
package, and its files under `/dashboard/<file>`. The charts are TradingView Lightweight Charts (Apache-2.0),
shipped in `vendor/` with their LICENSE and VERSION: the page requests nothing off-host, so it works offline.

The page signs in at `POST /auth/token` and keeps the JWT in sessionStorage (cleared on sign-out); it reads
/history, /risk, /models with `Authorization: Bearer`, and the five `/ws/<channel>` sockets with
`{"token": ...}` as their first message. Every URL it uses is relative to the page, so it also works when
the app is mounted below "/". Files are served by Starlette's StaticFiles (path checks, ETag, 304).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

router = APIRouter()

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "dashboard"
_files = StaticFiles(directory=STATIC_DIR)


@router.get("/dashboard", include_in_schema=False)
async def dashboard(request: Request) -> Response:
    """The page itself (its files are fetched relative to it: `dashboard/<file>`)."""
    return await _files.get_response("index.html", request.scope)


@router.get("/dashboard/{path:path}", include_in_schema=False)
async def dashboard_file(path: str, request: Request) -> Response:
    """The page's scripts, stylesheet and vendored chart library (404 for anything else)."""
    if not path:  # "/dashboard/": the page's relative URLs expect "/dashboard"
        return RedirectResponse("../dashboard", status_code=307)
    return await _files.get_response(path, request.scope)
