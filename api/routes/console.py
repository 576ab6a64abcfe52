"""The web console: static files under ``/ui/``, shipped in the package.

Three hand-written files (``api/console/``: ``index.html``, ``console.js``,
``console.css``) call the REST API with ``fetch()`` from the same origin; no
CDN, no build step. Every console response carries a strict
Content-Security-Policy (no inline script or style, no other origin).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from starlette.responses import FileResponse, RedirectResponse, Response

from kvconf.exceptions import NotFound

__all__ = ["ASSETS", "CSP", "router"]

router = APIRouter(tags=["console"], include_in_schema=False)

#: Where the console's files live (beside this package's modules, so it works
#: wherever the package is installed).
ASSETS = Path(__file__).resolve().parent.parent / "console"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


class AssetNotFound(NotFound):
    """No console file of that name."""

    code = "asset_not_found"


def _file(name: str) -> Response:
    media_type = _FILES.get(name)
    if media_type is None:
        raise AssetNotFound(f"the console has no file {name!r}", name=name)
    return FileResponse(ASSETS / name, media_type=media_type, headers=_HEADERS)


@router.get("/")
async def root() -> Response:
    """The console is the landing page."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
async def ui_no_slash() -> Response:
    """``/ui`` → ``/ui/`` (relative asset URLs need the slash)."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
async def index() -> Response:
    """The console's single page."""
    return _file("index.html")


@router.get("/ui/{name}")
async def asset(name: Annotated[str, PathParam(description="Console file name.")]) -> Response:
    """One of the console's files (a fixed list: nothing else is served)."""
    return _file(name)
