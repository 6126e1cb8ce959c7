"""The HTTP routes, one module per resource, gathered under /api by ``api_router``.

- ``info``: the server (version, limits, every job option, the OpenAPI schema) and the page;
- ``jobs``: the job queue (submit, list, read, cancel, retry, delete);
- ``files``: what a job has made or was given (result, record, bundle, preview, inputs);
- ``events``: a job's server-sent event stream;
- ``gallery``: the built-in paintings and photo, and how long a job would take;
- ``sheets`` (in ``service/sheets.py``): contact sheets, submitted as jobs;
- ``videos`` (in ``service/videos.py``): stylized clips, submitted as jobs.

Endpoints are plain functions; what they share (the job manager, the settings, the token
check, the JSON view of a job) comes from ``common``, read from the application's state,
so the routers hold nothing of one application and can be built for any number of them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from nstyle.service.settings import ServiceSettings
from nstyle.service.routes import events, files, gallery, info, jobs
from nstyle.service.routes.sheets import sheet_router
from nstyle.service.routes.videos import video_router
from nstyle.service.routes.common import ERROR_RESPONSES, require_token


def api_router(settings: ServiceSettings) -> APIRouter:
    """Every /api route; each needs the token when the server has one."""
    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)], responses=ERROR_RESPONSES)
    for module in (info, jobs, files, events, gallery):
        api.include_router(module.router(settings))
    api.include_router(sheet_router(settings))  # contact sheets: jobs of their own kind
    api.include_router(video_router(settings))  # videos: likewise
    return api
