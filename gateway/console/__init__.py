"""The browser console at ``/console``: plain HTML, CSS and JavaScript modules packaged with the
gateway (no build step, no CDN).

The page itself needs no API key; everything it shows comes from the public HTTP API, called
with ``Authorization: Bearer <key>`` (the key the user signs in with, kept in the tab's
``sessionStorage``), so the same files work against any gateway replica. None of these routes is
part of the OpenAPI document.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
PATH = "/console"
ASSETS_PATH = f"{PATH}/static"

#: Only the gateway's own scripts, styles and API; images also from blob: (page screenshots
#: fetched with the key) and data: URLs.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
))
_PAGE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def mount(app: FastAPI) -> None:
    """Serve the console's page at ``/console`` and its assets under ``/console/static``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC), name="console-static")

    @app.get(PATH, include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=_PAGE_HEADERS)

    @app.get(f"{PATH}/", include_in_schema=False)
    async def console_slash() -> RedirectResponse:
        return RedirectResponse(PATH, status_code=308)
