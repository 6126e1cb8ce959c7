"""The routes: the JSON API under /api, the event stream, and the page at /.

Every ``NStyleError`` becomes its ``http_status`` with the error's own message as
``{"detail": ...}``, the text the CLI prints for the same mistake. The page and its static
files need no token (they hold no data); every /api call does when a token is set.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import secrets
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import BadOption, NStyleError
from .errors import Conflict, NotFound, TooLarge, Unauthorized
from .jobs import JobManager
from .schemas import JobList, JobView, ServerInfo
from .settings import ServiceSettings
from .store import (FINISHED, PREVIEW_FILE, QUEUED, RECORD_FILE, RESULT_FILE, RUNNING, STATES,
                    SUCCEEDED, JobRow)
from .uploads import CONTENT_FIELD, STYLE_FIELDS, Upload, check_submission, client_options, fmt_bytes

STATIC_DIR = Path(__file__).with_name("static")

#: how often an event stream looks for news, and how long it may stay silent
STREAM_POLL_SECONDS = 0.2
STREAM_KEEPALIVE_SECONDS = 15.0

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "a token is required and was missing or wrong"},
    404: {"description": "no such job"},
}


def create_app(settings: Optional[ServiceSettings] = None) -> FastAPI:
    """The ASGI application; the job manager starts and stops with its lifespan."""
    settings = settings or ServiceSettings()
    manager = JobManager(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager.start()
        try:
            yield
        finally:
            await run_in_threadpool(manager.stop)

    # the interactive /docs pages load their scripts from a CDN, which an offline machine
    # cannot reach: only the schema itself is served (at /api/openapi.json, behind the token)
    app = FastAPI(title="nstyle", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None,
                  description="Neural style transfer (Gatys, Ecker & Bethge) as a job queue. "
                              "See docs/service.md.")
    app.state.settings, app.state.manager = settings, manager
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    app.add_exception_handler(NStyleError, _nstyle_error)  # type: ignore[arg-type]

    bearer = HTTPBearer(auto_error=False, description="needed only when the server was "
                        "started with --token")

    def require_token(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if settings.token is None:
            return
        if creds is None or not secrets.compare_digest(creds.credentials.encode(),
                                                       settings.token.encode()):
            raise Unauthorized("this server needs a token: send the header "
                               "'Authorization: Bearer <token>'")

    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)],
                    responses=ERROR_RESPONSES)

    def view(row: JobRow) -> dict[str, Any]:
        return job_view(row, manager)

    # ---- server ----------------------------------------------------------------------

    @api.get("/openapi.json", include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @api.get("/info", response_model=ServerInfo, summary="Version, limits and every job option")
    def info() -> dict[str, Any]:
        return {
            "version": __version__, "workers": settings.workers,
            "token_required": settings.token is not None,
            "limits": {"max_upload_bytes": settings.max_upload_bytes,
                       "max_pixels": settings.max_pixels, "max_styles": settings.max_styles,
                       "max_queue": settings.max_queue, "max_size": settings.max_size,
                       "formats": [f.lower() for f in settings.formats]},
            "options": [{"name": o.name, "section": o.section, "type": o.base_type.__name__,
                         "is_list": o.is_list, "default": _json_default(o.default), "help": o.help,
                         "choices": list(o.choices) if o.choices else None}
                        for o in client_options()],
        }

    # ---- jobs ------------------------------------------------------------------------

    @api.post("/jobs", status_code=201, response_model=JobView, summary="Submit a job",
              openapi_extra={"requestBody": _multipart_schema(settings)},
              responses={400: {"description": "a bad image or option (the message says which)"},
                         413: {"description": "an upload or image over a limit"},
                         415: {"description": "an image format this server does not take"},
                         429: {"description": "the queue is full"}})
    async def create_job(request: Request) -> JSONResponse:
        """Multipart form: the file `content`, one or more files `style`, and any engine
        option as a text field (see GET /api/info; lists are comma-separated). The job is
        checked completely before anything is stored: a refused job leaves nothing behind."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadOption("send the job as multipart/form-data: a file 'content', files "
                            "'style' and options as text fields")
        uploads: list[Upload] = []
        fields: list[tuple[str, str]] = []
        async with request.form(max_files=settings.max_styles + 16, max_fields=1000) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if not value.filename and not value.size:
                        continue  # an <input type=file> left empty
                    data = await value.read(settings.max_upload_bytes + 1)
                    uploads.append(Upload(key, value.filename or "", data, value.size or len(data)))
                elif key in (CONTENT_FIELD, *STYLE_FIELDS):
                    raise BadOption(f"field {key!r} must be a file upload, not text")
                else:
                    fields.append((key, value))
        sub = await run_in_threadpool(check_submission, uploads, fields, settings)
        row = await run_in_threadpool(manager.submit, sub)
        return JSONResponse(view(row), status_code=201, headers={"Location": f"/api/jobs/{row.id}"})

    @api.get("/jobs", response_model=JobList, summary="List jobs, newest first")
    def list_jobs(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
                  state: Optional[str] = Query(None, description="only jobs in this state"),
                  ) -> dict[str, Any]:
        if state and state not in STATES:
            raise BadOption(f"state must be one of {', '.join(STATES)}, got {state!r}")
        states = (state,) if state else None
        rows = manager.store.list(limit=limit, offset=offset, states=states)
        return {"jobs": [view(r) for r in rows], "total": manager.store.count(states),
                "queued": manager.store.count((QUEUED,)), "running": manager.store.count((RUNNING,))}

    @api.get("/jobs/{job_id}", response_model=JobView, summary="A job's state and progress")
    def get_job(job_id: str) -> dict[str, Any]:
        return view(manager.get(job_id))

    @api.post("/jobs/{job_id}/cancel", status_code=202, response_model=JobView,
              summary="Cancel a queued or running job", responses={409: {"description": "already finished"}})
    def cancel_job(job_id: str) -> dict[str, Any]:
        """A queued job is cancelled at once; a running one within one iteration (its state
        turns 'cancelled' then, and its last preview is kept)."""
        return view(manager.cancel(job_id))

    @api.post("/jobs/{job_id}/retry", status_code=202, response_model=JobView,
              summary="Queue a failed, cancelled or interrupted job again",
              responses={409: {"description": "the job is not failed, cancelled or interrupted"},
                         429: {"description": "the queue is full"}})
    def retry_job(job_id: str) -> dict[str, Any]:
        return view(manager.retry(job_id))

    @api.delete("/jobs/{job_id}", status_code=204, summary="Delete a job and its files")
    def delete_job(job_id: str) -> Response:
        """A running job is cancelled first."""
        manager.delete(job_id)
        return Response(status_code=204)

    @api.get("/jobs/{job_id}/result", summary="The result image (PNG)",
             response_class=FileResponse, responses={409: {"description": "no result (yet)"}})
    def get_result(job_id: str) -> FileResponse:
        _finished(manager.get(job_id))
        return FileResponse(manager.store.file(job_id, RESULT_FILE), media_type="image/png",
                            filename=f"nstyle-{job_id}.png")

    @api.get("/jobs/{job_id}/record", summary="The run record (config, versions, timings, losses)",
             responses={409: {"description": "no result (yet)"}})
    def get_record(job_id: str) -> FileResponse:
        _finished(manager.get(job_id))
        return FileResponse(manager.store.file(job_id, RECORD_FILE), media_type="application/json",
                            filename=f"nstyle-{job_id}.json")

    @api.get("/jobs/{job_id}/preview", summary="The latest preview image of a job (PNG)",
             response_class=Response)
    def get_preview(job_id: str) -> Response:
        manager.get(job_id)
        png = manager.preview_png(job_id)
        if png is None:
            raise NotFound(f"job {job_id} has no preview yet")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @api.get("/jobs/{job_id}/inputs/{key}", summary="An uploaded image, or its thumbnail",
             response_class=FileResponse)
    def get_input(job_id: str, key: str, thumbnail: bool = False) -> FileResponse:
        row = manager.get(job_id)
        entry = next((e for e in [row.inputs["content"], *row.inputs["styles"]] if e["key"] == key), None)
        if entry is None:
            raise NotFound(f"job {job_id} has no input {key!r} (content, style-1, ...)")
        if thumbnail:
            return FileResponse(manager.store.file(job_id, f"{key}.thumb.png"), media_type="image/png")
        return FileResponse(manager.store.file(job_id, entry["file"]), filename=entry["name"])

    @api.get("/jobs/{job_id}/events", summary="Server-sent events: state, progress, previews",
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description":
                        "events 'state' (the job, on every change of state or queue position), "
                        "'progress' (iteration, losses, ETA), 'preview' (a PNG data URL), and a "
                        "last 'end' (the finished job) or 'deleted'; see docs/service.md"}})
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        manager.get(job_id)  # an unknown job is a 404, not an empty stream
        return StreamingResponse(_event_stream(job_id, request, manager), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    app.include_router(api)

    # ---- the page --------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# --------------------------------------------------------------------------- helpers


def _iso(t: Optional[float]) -> Optional[str]:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


def job_view(row: JobRow, manager: JobManager) -> dict[str, Any]:
    base = f"/api/jobs/{row.id}"

    def input_info(e: dict[str, Any]) -> dict[str, Any]:
        url = f"{base}/inputs/{e['key']}"
        return {"key": e["key"], "name": e["name"], "width": e["width"], "height": e["height"],
                "thumbnail": url + "?thumbnail=true", "original": url}

    links: dict[str, Any] = {"self": base, "events": base + "/events", "cancel": base + "/cancel",
                             "retry": base + "/retry"}
    live = manager.live(row.id) if row.state == RUNNING else None
    if row.state == SUCCEEDED:
        links.update(result=base + "/result", record=base + "/record")
    elif (live is not None and live.preview_png is not None) or (
            row.state in FINISHED and manager.store.file(row.id, PREVIEW_FILE).exists()):
        links["preview"] = base + "/preview"
    return {
        "id": row.id, "state": row.state, "created": _iso(row.created), "started": _iso(row.started),
        "finished": _iso(row.finished),
        "queue_position": manager.queue_position(row.id) if row.state == QUEUED else None,
        "progress": live.progress() if live is not None else None,
        "options": row.options, "config": row.config,
        "inputs": {"content": input_info(row.inputs["content"]),
                   "styles": [input_info(e) for e in row.inputs["styles"]]},
        "iterations": row.iterations, "losses": row.losses, "output_size": row.output_size,
        "error": row.error, "links": links,
    }


def _finished(row: JobRow) -> JobRow:
    if row.state != SUCCEEDED:
        detail = f": {row.error}" if row.error else ""
        raise Conflict(f"job {row.id} is {row.state}{detail}; it has no result"
                       if row.state in FINISHED else f"job {row.id} is {row.state}; no result yet")
    return row


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _event_stream(job_id: str, request: Request, manager: JobManager) -> AsyncIterator[str]:
    """Polls the manager's change counters: cheap, and it coalesces a fast run's many
    iterations into at most one 'progress' event per poll."""
    seen_version = None
    seen_state: Optional[tuple[str, Optional[int]]] = None
    seen_iteration, seen_preview = -1, -1
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"  # how long a browser's EventSource waits before reconnecting
    while True:
        version = manager.version(job_id)
        if version != seen_version:
            seen_version = version
            try:
                row = manager.get(job_id)
            except NotFound:
                yield _sse("deleted", {"id": job_id})
                return
            view = job_view(row, manager)
            out = []
            if (row.state, view["queue_position"]) != seen_state:
                seen_state = (row.state, view["queue_position"])
                out.append(_sse("state", view))
            live = manager.live(job_id)
            if live is not None and live.iteration and live.iteration != seen_iteration:
                seen_iteration = live.iteration
                out.append(_sse("progress", {"id": job_id, **live.progress()}))
            if live is not None and live.preview_iteration != seen_preview and live.preview_data_url:
                seen_preview = live.preview_iteration
                out.append(_sse("preview", {"id": job_id, "iteration": live.preview_iteration,
                                            "image": live.preview_data_url}))
            if row.state in FINISHED:
                if row.iterations and row.iterations != seen_iteration:
                    # the last iterations ran between two polls: report where it ended
                    out.append(_sse("progress", _final_progress(row)))
                if row.state == SUCCEEDED and seen_preview != row.iterations:
                    # the stream ends on the final image, even when it missed the live ones
                    image = manager.result_data_url(job_id)
                    if image is not None:
                        out.append(_sse("preview", {"id": job_id, "iteration": row.iterations,
                                                    "image": image}))
                out.append(_sse("end", view))
            if out:
                yield "".join(out)
                last_sent = time.monotonic()
            if row.state in FINISHED:
                return
        elif time.monotonic() - last_sent > STREAM_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        if await request.is_disconnected():
            return
        await asyncio.sleep(STREAM_POLL_SECONDS)


def _final_progress(row: JobRow) -> dict[str, Any]:
    total = row.config["optim"]["iterations"]
    elapsed = (row.finished or 0.0) - (row.started or row.finished or 0.0)
    return {"id": row.id, "iteration": row.iterations, "iterations": total,
            "percent": round(100.0 * (row.iterations or 0) / total, 1), "elapsed": round(elapsed, 3),
            "eta": 0.0, "losses": row.losses or {}, "preview_iteration": row.iterations}


def _json_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _multipart_schema(settings: ServiceSettings) -> dict[str, Any]:
    """The create-job form, generated from the config's options like the CLI's flags."""
    props: dict[str, Any] = {
        CONTENT_FIELD: {"type": "string", "format": "binary", "description": "the photo to repaint"},
        "style": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                  "maxItems": settings.max_styles, "description": "one or more style images"},
    }
    types = {int: "integer", float: "number", str: "string"}
    for o in client_options():
        prop: dict[str, Any] = {"description": o.help}
        if o.is_list:
            prop["type"] = "string"
            prop["description"] += " (comma-separated)"
        else:
            prop["type"] = types.get(o.base_type, "string")
        if o.choices:
            prop["enum"] = list(o.choices)
        if o.default is not None:
            prop["default"] = ",".join(map(str, o.default)) if o.is_list else o.default
        props[o.name] = prop
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": [CONTENT_FIELD, "style"], "properties": props}}}}


async def _nstyle_error(request: Request, exc: NStyleError) -> JSONResponse:
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status == 429:
        headers["Retry-After"] = "10"
    return JSONResponse({"detail": str(exc)}, status_code=exc.http_status, headers=headers)


class BodyLimit:
    """Refuses a request body over ``limit`` bytes before it is read (413), whether the
    client announced its length or streams it in chunks; the form parser never sees it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        message = (f"the request is over this server's limit of {fmt_bytes(self.limit)} "
                   "(see GET /api/info for the per-image limit)")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": message}, status_code=413,
                               headers={"Connection": "close"})(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.limit:
                    raise TooLarge(message)  # mapped to 413 by the NStyleError handler
            return msg

        await self.app(scope, counting_receive, send)
