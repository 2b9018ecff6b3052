"""The operators' dashboard, served by the cloud service: static pages, no CDN, English and Simplified Chinese.

The app lives under `/ui/` (`/` redirects there): `index.html`, our own ES modules, CSS and i18n JSON from
`cloud/dashboard/static/`, and the chart library (uPlot) from the `uplot-python` package's data in
site-packages at `/ui/vendor/`, so nothing is fetched from the internet and nothing vendored is copied here.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse

__all__ = ["STATIC", "router", "vendor_files"]

router = APIRouter(tags=["dashboard"], include_in_schema=False)

STATIC = Path(__file__).resolve().parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".json": "application/json", ".svg": "image/svg+xml"}
# The page and our modules change with every release: revalidate; the packaged library is immutable per version.
_NO_CACHE = {"Cache-Control": "no-cache"}


def vendor_files() -> dict[str, Path]:
    """The chart library's files as installed by pip (name under /ui/vendor/ -> file in site-packages)."""
    base = Path(str(resources.files("uplot") / "static"))
    return {"uplot.js": base / "uPlot.iife.js", "uplot.css": base / "uPlot.min.css"}


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=_TYPES.get(path.suffix, "application/octet-stream"), headers=_NO_CACHE)


@router.get("/")
async def root() -> RedirectResponse:
    """The dashboard's home."""
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui")
async def ui_no_slash() -> RedirectResponse:
    """The page's relative links need the trailing slash."""
    return RedirectResponse("ui/", status_code=307)


@router.get("/ui/")
async def index() -> FileResponse:
    """The single page (hash routes: #/, #/site/S, #/site/S/calendar, #/site/S/line/L, #/site/S/machine/M)."""
    return _file(STATIC / "index.html")


@router.get("/ui/vendor/{name}")
async def vendor(name: Annotated[str, PathParam(max_length=40)]) -> FileResponse:
    """uPlot from its PyPI package."""
    files = vendor_files()
    if name not in files:
        raise HTTPException(404, f"file {name!r} not found")
    return _file(files[name])


@router.get("/ui/{path:path}")
async def static(path: Annotated[str, PathParam(max_length=200)]) -> FileResponse:
    """Our own modules, styles and dictionaries; nothing outside the static folder."""
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC) or not target.is_file() or target.suffix not in _TYPES:
        raise HTTPException(404, f"file {path!r} not found")
    return _file(target)
