"""What the page offers someone with no pictures at hand, and how long a run would take.

- ``GET /api/styles``: the built-in paintings (``nstyle.io.gallery``), each with its image URL;
- ``GET /api/styles/{name}/image``: one of them (JPEG), looked up by name in the fixed
  table only, never as a path;
- ``GET /api/samples/photo``: the built-in photo (the example's cat), for "try it";
- ``GET /api/estimate``: the seconds a job of these options would take on this server,
  from its plan and the server's measured speed (``nstyle.io.speed``); while the speed is
  being measured (once, seconds, in the background) it answers ``seconds: null``.

The page fetches a painting or the photo and sends it back as an ordinary upload, so a job
made from them is checked and stored like any other.
"""

from __future__ import annotations

import io
import logging
import threading
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from nstyle.core import estimate
from nstyle.core.plan import schedule
from nstyle.errors import BadOption
from nstyle.io import gallery, speed
from nstyle.io.example import example_images
from nstyle.service.errors import NotFound
from nstyle.service.routes.common import settings_of
from nstyle.service.settings import ServiceSettings
from nstyle.service.uploads import blame, check_options, check_work

log = logging.getLogger("nstyle.service")
#: browsers may keep the paintings and the photo: they never change within a version
CACHE = {"Cache-Control": "max-age=86400"}


def router(settings: ServiceSettings) -> APIRouter:
    r = APIRouter()
    r.add_api_route("/styles", list_styles, methods=["GET"],
                    summary="The built-in paintings, usable as style images")
    r.add_api_route("/styles/{name}/image", style_image, methods=["GET"], response_class=Response,
                    summary="A built-in painting (JPEG)")
    r.add_api_route("/samples/photo", sample_photo, methods=["GET"], response_class=Response,
                    summary="The built-in photo (JPEG), to try nstyle without one")
    r.add_api_route("/estimate", estimate_job, methods=["GET"],
                    summary="How long a job with these options would take on this server")
    return r


def list_styles() -> list[dict[str, Any]]:
    return [{"name": p.name, "title": p.title, "artist": p.artist, "year": p.year,
             "look": p.look, "image": f"/api/styles/{p.name}/image"} for p in gallery.PAINTINGS]


def style_image(name: str) -> Response:
    painting = gallery.find(name)
    if painting is None:
        hint = gallery.suggest(name)
        raise NotFound(f"no built-in painting called {name[:60]!r}"
                       + (f" (did you mean {hint!r}?)" if hint else "") + "; GET /api/styles lists them")
    return Response(painting.read_bytes(), media_type="image/jpeg", headers=CACHE)


@lru_cache(maxsize=1)
def _photo_jpeg() -> bytes:
    buffer = io.BytesIO()
    example_images()[0].save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def sample_photo() -> Response:
    return Response(_photo_jpeg(), media_type="image/jpeg", headers=CACHE)


# --------------------------------------------------------------------------- the estimate

_measuring = threading.Lock()


def _measure_in_background(config) -> None:
    """Measures this machine once, in a thread of its own, so no request waits for it."""
    if not _measuring.acquire(blocking=False):
        return  # already under way

    def work() -> None:
        try:
            speed.measure(config)
        except Exception:  # an estimate is a convenience: the server goes on without one
            log.exception("measuring this machine's speed failed")
        finally:
            _measuring.release()

    threading.Thread(target=work, name="nstyle-measure-speed", daemon=True).start()


def _estimate(config, width: int, height: int) -> dict[str, Any]:
    plan = schedule(config, (height, width))
    known = speed.known_speed(config)
    if known is None:
        _measure_in_background(config)
        return {"seconds": None, "text": None, "measuring": True}
    secs = estimate.seconds(plan, known)
    return {"seconds": round(secs, 1), "text": estimate.describe(secs), "measuring": False,
            "iterations": plan.total_iterations,
            "output_size": [plan.output.width, plan.output.height]}


async def estimate_job(request: Request, width: int, height: int,
                       settings: ServiceSettings = Depends(settings_of)) -> dict[str, Any]:
    """``width`` and ``height``: the photo's; every other query parameter is a job option,
    as POST /api/jobs takes it (empty: the default)."""
    if not (1 <= width <= 100_000 and 1 <= height <= 100_000):
        raise blame(BadOption("width and height must be between 1 and 100000 pixels"), "content")
    fields = [(k, v) for k, v in request.query_params.multi_items() if k not in ("width", "height")]
    config, _ = check_options(fields, settings)
    check_work(config, (width, height), None, settings)
    return await run_in_threadpool(_estimate, config, width, height)

