"""The routes: the JSON API under /api, the event stream, and the page at /.

Every ``NStyleError`` becomes its ``http_status`` with the error's own message as
``{"detail": ...}`` (plus ``"field"`` when it concerns one form field), the text the CLI
prints for the same mistake. Every other failure is JSON too: a full disk is 507, a store
locked by another process 503, anything else 500. The page and its static files need no
token (they hold no data); every /api call does when a token is set.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import io
import json
import logging
import secrets
import sqlite3
import threading
import time
import zipfile
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
from ..inputs import INPUT_FIELDS
from .errors import Conflict, NotFound, TooLarge, Unauthorized
from .jobs import JobManager, is_disk_full
from .labels import SECTIONS, label, readable
from .schemas import JobList, JobView, ServerInfo
from .settings import ServiceSettings
from .sheets import sheet_router
from .store import (FINISHED, PREVIEW_FILE, QUEUED, RECORD_FILE, RESULT_FILE, RUNNING, STATES,
                    SUCCEEDED, JobRow, input_entries)
from .uploads import (CONTENT_FIELD, MASK_FIELD,
                      Upload, check_submission, client_options, fmt_bytes)

log = logging.getLogger("nstyle.service")

#: most text fields one request may carry (there are about 30 options)
MAX_FIELDS = 100
#: a text part longer than this is refused by the form parser itself; shorter ones over
#: the server's --max-field-chars get a message that names the field
MAX_PART_BYTES = 64 * 1024
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
    decode_gate = threading.BoundedSemaphore(settings.decode_slots)
    app.add_middleware(RequestGuard, limit=settings.max_request_bytes)
    app.add_exception_handler(NStyleError, _nstyle_error)  # type: ignore[arg-type]
    app.add_exception_handler(OSError, _system_error)  # type: ignore[arg-type]
    app.add_exception_handler(sqlite3.Error, _system_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _system_error)  # type: ignore[arg-type]

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
                       "max_pixels": settings.max_pixels,
                       "max_request_pixels": settings.max_request_pixels,
                       "max_styles": settings.max_styles,
                       "max_queue": settings.max_queue, "max_size": settings.max_size,
                       "max_iterations": settings.max_iterations,
                       "max_megapixel_iterations": settings.max_megapixel_iterations,
                       "max_field_chars": settings.max_field_chars,
                       "formats": [f.lower() for f in settings.formats]},
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
        }

    # ---- jobs ------------------------------------------------------------------------

    @api.post("/jobs", status_code=201, response_model=JobView, summary="Submit a job",
              openapi_extra={"requestBody": _multipart_schema(settings)},
              responses={400: {"description": "a bad image or option (the message says which)"},
                         413: {"description": "an upload or image over a limit"},
                         415: {"description": "an image format this server does not take"},
                         429: {"description": "the queue is full"},
                         507: {"description": "the server's disk is full"}})
    async def create_job(request: Request) -> JSONResponse:
        """Multipart form: the file `content`, one or more files `style`, optional files
        `style_mask` (one per style, in order; the text `none` for a style without one),
        `keep_mask`, `init_image`, `fine_style` and `coarse_style`, and any engine option as a
        text field (see GET /api/info; lists are comma-separated). The job is checked
        completely before anything is stored: a refused job leaves nothing behind."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadOption("send the job as multipart/form-data: a file 'content', files "
                            "'style' and options as text fields")
        uploads: list[Upload] = []
        fields: list[tuple[str, str, int]] = []
        async with request.form(max_files=settings.max_files, max_fields=MAX_FIELDS,
                                max_part_size=MAX_PART_BYTES) as form:
            for position, (key, value) in enumerate(form.multi_items()):
                if isinstance(value, UploadFile):
                    if not value.filename and not value.size:
                        continue  # an <input type=file> left empty
                    data = await value.read(settings.max_upload_bytes + 1)
                    uploads.append(Upload(key, value.filename or "", data,
                                          value.size or len(data), position))
                else:
                    fields.append((key, value, position))
        sub = await run_in_threadpool(check_submission, uploads, fields, settings, decode_gate)
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

    @api.get("/jobs/{job_id}/bundle", summary="A zip of the result, its record and the inputs",
             response_class=Response, responses={409: {"description": "no result (yet)"}})
    def get_bundle(job_id: str) -> Response:
        row = _finished(manager.get(job_id))
        return Response(_bundle(row, manager), media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="nstyle-{job_id}.zip"'})

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
        entry = next((e for e in input_entries(row.inputs) if e["key"] == key), None)
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
    app.include_router(sheet_router(manager, settings, decode_gate, require_token))

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
        links.update(result=base + "/result", record=base + "/record", bundle=base + "/bundle")
    elif (live is not None and live.preview_png is not None) or (
            row.state in FINISHED and manager.store.file(row.id, PREVIEW_FILE).exists()):
        links["preview"] = base + "/preview"
    return {
        "id": row.id, "state": row.state, "created": _iso(row.created), "started": _iso(row.started),
        "finished": _iso(row.finished),
        "queue_position": manager.queue_position(row.id) if row.state == QUEUED else None,
        "progress": live.progress() if live is not None else None,
        "options": row.options, "config": row.config,
        "inputs": {name: [None if e is None else input_info(e) for e in value]
                   if isinstance(value, list) else input_info(value)
                   for name, value in row.inputs.items()},
        "iterations": row.iterations, "iterations_total": row.iterations_total,
        "losses": row.losses, "output_size": row.output_size,
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
    total = row.iterations_total or row.iterations or 1  # the plan's, as the run reported it
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
    for f in INPUT_FIELDS:
        binary = {"type": "string", "format": "binary"}
        if f.per_style:
            props[MASK_FIELD] = {"type": "array", "items": binary, "maxItems": settings.max_styles,
                                 "description": f.help + "; the text 'none' for a style without one"}
        else:
            props[f.name] = {**binary, "description": f.help}
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


def _bundle(row: JobRow, manager: JobManager) -> bytes:
    """result.png, record.json and inputs/<key>-<name> in one zip (images are stored, not
    deflated: they are compressed already)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(manager.store.file(row.id, RESULT_FILE), "result.png")
        z.write(manager.store.file(row.id, RECORD_FILE), "record.json", zipfile.ZIP_DEFLATED)
        for e in input_entries(row.inputs):
            name = e["name"].replace("/", "_")
            z.write(manager.store.file(row.id, e["file"]), f"inputs/{e['key']}-{name}")
    return buf.getvalue()


async def _nstyle_error(request: Request, exc: NStyleError) -> JSONResponse:
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status == 429:
        headers["Retry-After"] = "10"
    body: dict[str, Any] = {"detail": str(exc)}
    if getattr(exc, "field", None):
        body["field"] = exc.field  # type: ignore[attr-defined]
        if getattr(exc, "index", None) is not None:
            body["index"] = exc.index  # type: ignore[attr-defined]
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


async def _system_error(request: Request, exc: Exception) -> JSONResponse:
    """What is not the client's doing, still as JSON: a full disk 507, a store locked by
    another process 503 (try again), anything else 500 (and a traceback in the log)."""
    if is_disk_full(exc):
        return JSONResponse({"detail": "the server's disk is full; nothing was stored. Try "
                             "again once space is free"}, status_code=507)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower():
        return JSONResponse({"detail": "the job records are busy (locked by another process); "
                             "try again in a moment"}, status_code=503, headers={"Retry-After": "5"})
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


class RequestGuard:
    """Refuses a request body over ``limit`` bytes before it is read (413), whether the
    client announced its length or streams it in chunks; and a multipart body that ends
    without its closing boundary (400): the form parser would take it and silently drop
    the field that was cut short."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        message = (f"the request is over this server's limit of {fmt_bytes(self.limit)} "
                   "(see GET /api/info for the per-image limit)")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": message}, status_code=413,
                               headers={"Connection": "close"})(scope, receive, send)
            return
        closing = _closing_delimiter(headers.get(b"content-type", b""))
        received, tail, closed = 0, b"", False

        async def guarded_receive() -> Message:
            nonlocal received, tail, closed
            msg = await receive()
            if msg["type"] != "http.request":
                return msg
            body = msg.get("body", b"")
            received += len(body)
            if received > self.limit:
                raise TooLarge(message)  # mapped to 413 by the NStyleError handler
            if closing is not None and not closed:
                window = tail + body  # the delimiter may straddle two chunks
                closed = closing in window
                tail = window[-len(closing):]
                if not msg.get("more_body", False) and not closed:
                    raise BadOption("the multipart body ends without its closing boundary: the "
                                    "upload was cut short; send it again")
            return msg

        await self.app(scope, guarded_receive, send)


def _closing_delimiter(content_type: bytes) -> Optional[bytes]:
    """b'--BOUNDARY--' of a multipart/form-data request, else None."""
    kind, _, params = content_type.decode("latin-1").partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value.strip().strip('"'):
            return b"--" + value.strip().strip('"').encode("latin-1") + b"--"
    return None
