"""A job's server-sent event stream: its state, progress and previews as they change."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from nstyle.service.errors import NotFound
from nstyle.service.jobs import JobManager
from nstyle.service.settings import ServiceSettings
from nstyle.tasks.base import IMAGE, SHEET, VIDEO
from nstyle.service.store import FINISHED, SUCCEEDED, JobRow
from nstyle.service.routes.common import job_view, manager_of

#: how often an event stream looks for news, and how long it may stay silent
STREAM_POLL_SECONDS = 0.2
STREAM_KEEPALIVE_SECONDS = 15.0


def router(settings: ServiceSettings) -> APIRouter:
    r = APIRouter()
    r.add_api_route(
        "/jobs/{job_id}/events", job_events, methods=["GET"],
        summary="Server-sent events: state, progress, previews", response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description":
                   "events 'state' (the job, on every change of state or queue position), "
                   "'progress' (iteration, losses, ETA), 'preview' (a PNG data URL), and a "
                   "last 'end' (the finished job) or 'deleted'; see docs/service.md"}})
    return r


async def job_events(job_id: str, request: Request,
                     manager: JobManager = Depends(manager_of)) -> StreamingResponse:
    manager.get(job_id)  # an unknown job is a 404, not an empty stream
    return StreamingResponse(_event_stream(job_id, request, manager), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


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
            "eta": 0.0, "losses": row.losses or {}, "preview_iteration": row.iterations,
            "phase": LAST_PHASE[row.kind]}


#: the live events' last phase, per kind of job
LAST_PHASE = {IMAGE: "stylize", SHEET: "sheet", VIDEO: "video"}


