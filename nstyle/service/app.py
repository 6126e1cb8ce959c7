"""The web application: the JSON API under /api, the event stream, and the page at /.

The routes live in ``routes`` (one module per resource); this module assembles them with
the job manager, the request guard and the error handlers. Every ``NStyleError`` becomes its
``http_status`` with the error's own message as ``{"detail": ...}`` (plus ``"field"`` when it
concerns one form field), the text the CLI prints for the same mistake. Every other failure
is JSON too: a full disk is 507, a store locked by another process 503, anything else 500.
The page and its static files need no token (they hold no data); every /api call does when
a token is set.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from nstyle.version import __version__
from nstyle.errors import NStyleError
from nstyle.service.errors import Unauthorized
from nstyle.service.guard import OriginGuard, RequestGuard
from nstyle.service.jobs import JobManager, is_disk_full
from nstyle.service.routes import api_router
from nstyle.service.routes.info import add_page
from nstyle.service.settings import ServiceSettings

log = logging.getLogger("nstyle.service")


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
    # set when a browser has fetched the page: 'nstyle gui' says it opened only then
    app.state.page_fetched = threading.Event()
    # bounds how many uploads are decoded at once (memory), across every request
    app.state.decode_gate = threading.BoundedSemaphore(settings.decode_slots)
    # bounds how many request bodies are read and checked at once (``uploads.read_form``)
    app.state.form_slots = asyncio.Semaphore(settings.form_slots)
    app.add_middleware(RequestGuard, limit=settings.max_request_bytes)
    # outermost: a request addressed to another name, or from another site, reads nothing
    app.add_middleware(OriginGuard, host_names=settings.host_names,
                       trusted_origins=settings.public_hosts)
    app.add_exception_handler(NStyleError, _nstyle_error)  # type: ignore[arg-type]
    app.add_exception_handler(OSError, _system_error)  # type: ignore[arg-type]
    app.add_exception_handler(sqlite3.Error, _system_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _system_error)  # type: ignore[arg-type]
    app.include_router(api_router(settings))
    add_page(app)
    return app


async def _nstyle_error(request: Request, exc: NStyleError) -> JSONResponse:
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status in (429, 503):
        headers["Retry-After"] = "10" if exc.http_status == 429 else "2"
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
