"""What the routes share: the application's job manager and settings, the token check,
and the JSON view of a job."""

from __future__ import annotations

import datetime as _dt
import secrets
from typing import Any, Optional

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nstyle.service.errors import Conflict, Unauthorized
from nstyle.service.jobs import JobManager
from nstyle.service.settings import ServiceSettings
from nstyle.service.store import FINISHED, PREVIEW_FILE, QUEUED, RUNNING, SUCCEEDED, JobRow
from nstyle.service.uploads import read_form

#: answers every /api route may give (documented once, on the /api router)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "a token is required and was missing or wrong"},
    404: {"description": "no such job"},
}

bearer = HTTPBearer(auto_error=False, description="needed only when the server was "
                    "started with --token")


def manager_of(request: Request) -> JobManager:
    return request.app.state.manager


def settings_of(request: Request) -> ServiceSettings:
    return request.app.state.settings


def require_token(request: Request,
                  creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
    token = settings_of(request).token
    if token is None:
        return
    if creds is None or not secrets.compare_digest(creds.credentials.encode(), token.encode()):
        raise Unauthorized("this server needs a token: send the header "
                           "'Authorization: Bearer <token>'")


def _iso(t: Optional[float]) -> Optional[str]:
    if t is None:
        return None
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


def job_view(row: JobRow, manager: JobManager) -> dict[str, Any]:
    """A job as the API shows it (``schemas.JobView``): state, progress, inputs, links."""
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
    if (live is not None and live.preview_png is not None) or (
            row.state in FINISHED and manager.store.file(row.id, PREVIEW_FILE).exists()):
        links["preview"] = base + "/preview"  # (a succeeded video's: one of its frames)
    return {
        "id": row.id, "state": row.state, "kind": row.kind, "created": _iso(row.created), "started": _iso(row.started),
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


def finished(row: JobRow) -> JobRow:
    """``row`` if the job succeeded, else ``Conflict`` saying why it has no result."""
    if row.state != SUCCEEDED:
        detail = f": {row.error}" if row.error else ""
        raise Conflict(f"job {row.id} is {row.state}{detail}; it has no result"
                       if row.state in FINISHED else f"job {row.id} is {row.state}; no result yet")
    return row


async def submit_form(request: Request, settings: ServiceSettings, kind: str, check) -> JSONResponse:
    """A submitted form, whatever its kind: read (``read_form``), checked completely by
    ``check`` off the event loop before anything is stored, queued; answers 201 with the
    job's view and its Location (POST /api/jobs, /api/sheets and /api/videos)."""
    manager = manager_of(request)
    async with read_form(request, settings, kind) as (uploads, fields):
        sub = await run_in_threadpool(check, uploads, fields, settings, request.app.state.decode_gate)
        row = await run_in_threadpool(manager.submit, sub)
    return JSONResponse(job_view(row, manager), status_code=201,
                        headers={"Location": f"/api/jobs/{row.id}"})
