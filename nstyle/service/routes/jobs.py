"""The job queue: submit a job, list jobs, read one, cancel, retry or delete it."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from nstyle.errors import BadOption
from nstyle.service.jobs import JobManager
from nstyle.service.schemas import JobList, JobView
from nstyle.service.settings import ServiceSettings
from nstyle.service.store import QUEUED, RUNNING, STATES
from nstyle.service.form_schema import form_schema
from nstyle.service.uploads import check_submission
from nstyle.service.routes.common import job_view, manager_of, settings_of, submit_form



def router(settings: ServiceSettings) -> APIRouter:
    r = APIRouter()
    r.add_api_route(
        "/jobs", create_job, methods=["POST"], status_code=201, response_model=JobView,
        summary="Submit a job", openapi_extra={"requestBody": form_schema(settings)},
        responses={400: {"description": "a bad image or option (the message says which)"},
                   413: {"description": "an upload or image over a limit"},
                   415: {"description": "an image format this server does not take"},
                   429: {"description": "the queue is full"},
                   507: {"description": "the server's disk is full"}})
    r.add_api_route("/jobs", list_jobs, methods=["GET"], response_model=JobList,
                    summary="List jobs, newest first")
    r.add_api_route("/jobs/{job_id}", get_job, methods=["GET"], response_model=JobView,
                    summary="A job's state and progress")
    r.add_api_route("/jobs/{job_id}/cancel", cancel_job, methods=["POST"], status_code=202,
                    response_model=JobView, summary="Cancel a queued or running job",
                    responses={409: {"description": "already finished"}})
    r.add_api_route("/jobs/{job_id}/retry", retry_job, methods=["POST"], status_code=202,
                    response_model=JobView, summary="Queue a failed, cancelled or interrupted job again",
                    responses={409: {"description": "the job is not failed, cancelled or interrupted"},
                               429: {"description": "the queue is full"}})
    r.add_api_route("/jobs/{job_id}", delete_job, methods=["DELETE"], status_code=204,
                    summary="Delete a job and its files")
    return r


async def create_job(request: Request) -> JSONResponse:
    """Multipart form: the file `content`, one or more files `style`, optional files
    `style_mask` (one per style, in order; the text `none` for a style without one),
    `keep_mask`, `init_image`, `fine_style` and `coarse_style`, and any engine option as a
    text field (see GET /api/info; lists are comma-separated). The job is checked
    completely before anything is stored: a refused job leaves nothing behind."""
    return await submit_form(request, settings_of(request), "job", check_submission)


#: largest offset of the job list (SQLite's integers end at 2**63; found by fuzzing)
MAX_OFFSET = 10**9


def list_jobs(limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_OFFSET),
              state: Optional[str] = Query(None, description="only jobs in this state"),
              manager: JobManager = Depends(manager_of)) -> dict[str, Any]:
    if state and state not in STATES:
        raise BadOption(f"state must be one of {', '.join(STATES)}, got {state!r}")
    states = (state,) if state else None
    rows = manager.store.list(limit=limit, offset=offset, states=states)
    return {"jobs": [job_view(r, manager) for r in rows], "total": manager.store.count(states),
            "queued": manager.store.count((QUEUED,)), "running": manager.store.count((RUNNING,))}


def get_job(job_id: str, manager: JobManager = Depends(manager_of)) -> dict[str, Any]:
    return job_view(manager.get(job_id), manager)


def cancel_job(job_id: str, manager: JobManager = Depends(manager_of)) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one within one iteration (its state
    turns 'cancelled' then, and its last preview is kept)."""
    return job_view(manager.cancel(job_id), manager)


def retry_job(job_id: str, manager: JobManager = Depends(manager_of)) -> dict[str, Any]:
    return job_view(manager.retry(job_id), manager)


def delete_job(job_id: str, manager: JobManager = Depends(manager_of)) -> Response:
    """A running job is cancelled first."""
    manager.delete(job_id)
    return Response(status_code=204)
