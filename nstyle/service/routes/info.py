"""The server itself: version, limits and every job option (what the page builds its form
from), the OpenAPI schema, and the page."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from nstyle.version import __version__
from nstyle.options.inputs import INPUT_FIELDS
from nstyle.tasks.video import VideoOptions
from nstyle.service.labels import SECTIONS, label, readable
from nstyle.service.schemas import ServerInfo
from nstyle.service.settings import ServiceSettings
from nstyle.service.uploads import MASK_FIELD, client_options
from nstyle.service.routes.common import settings_of

STATIC_DIR = Path(__file__).parent.parent / "static"


def router(settings: ServiceSettings) -> APIRouter:
    r = APIRouter()
    r.add_api_route("/openapi.json", openapi, methods=["GET"], include_in_schema=False)
    r.add_api_route("/info", info, methods=["GET"], response_model=ServerInfo,
                    summary="Version, limits and every job option")
    return r


def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


def info(settings: ServiceSettings = Depends(settings_of)) -> dict[str, Any]:
    return {
        "version": __version__, "workers": settings.workers,
        "token_required": settings.token is not None,
        "limits": {"max_upload_bytes": settings.max_upload_bytes,
                   "max_pixels": settings.max_pixels,
                   "max_request_pixels": settings.max_request_pixels,
                   "max_styles": settings.max_styles,
                   "max_queue": settings.max_queue, "max_size": settings.max_size,
                   "max_iterations": settings.max_iterations,
                   "max_megapixel_iterations": settings.max_megapixel_iterations,
                   "max_field_chars": settings.max_field_chars,
                   "formats": [f.lower() for f in settings.formats],
                   "video": {"max_upload_bytes": settings.max_video_upload_bytes,
                             "max_seconds": settings.max_video_seconds,
                             "max_frames": settings.max_video_frames,
                             "max_pixels": settings.max_video_pixels,
                             "max_size": settings.max_video_size,
                             "max_iterations": settings.max_video_iterations}},
        "options": [{"name": o.name, "label": label(o.name), "section": o.section,
                     "section_label": SECTIONS.get(o.section, o.section.capitalize()),
                     "type": o.base_type.__name__, "is_list": o.is_list,
                     "default": _json_default(o.default),
                     "default_text": readable(o.default_text), "help": readable(o.help),
                     "choices": list(o.choices) if o.choices else None}
                    for o in client_options()],
        "inputs": [{"name": MASK_FIELD if f.per_style else f.name, "label": label(f.name),
                    "help": readable(f.help), "mask": f.mask, "per_style": f.per_style}
                   for f in INPUT_FIELDS],
        "video_options": [{"name": f.name, "label": f.metadata["label"],
                           "type": f.type if isinstance(f.type, str) else f.type.__name__,
                           "default": f.default, "help": readable(f.metadata["help"]),
                           "choices": list(f.metadata["choices"]) if f.metadata.get("choices") else None}
                          for f in dataclasses.fields(VideoOptions)],
    }


def _json_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def add_page(app: FastAPI) -> None:
    """The page at / and its static files: no token (they hold no data)."""
    app.add_api_route("/", page, methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def page(request: Request) -> FileResponse:
    request.app.state.page_fetched.set()
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
