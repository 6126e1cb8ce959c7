"""The /videos route: a video submitted as a job (checked by ``nstyle.service.videos``)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from nstyle.service.routes.common import submit_form
from nstyle.service.form_schema import BINARY, SCHEMA_TYPES, form_schema, job_files
from nstyle.service.videos import CLIP_FIELD, check_video
from nstyle.tasks.video import NOT_FOR_VIDEO, VideoOptions


def video_router(settings) -> APIRouter:
    """The /videos route; ``routes.api_router`` mounts it under /api, behind the token."""
    router = APIRouter()
    files = {CLIP_FIELD: {**BINARY, "description": "the clip (MP4/MOV, MKV/WebM, AVI or GIF)"},
             "style": job_files(settings)["style"]}
    extra = {f.name: {"type": SCHEMA_TYPES[f.type if isinstance(f.type, str) else f.type.__name__],
                      "default": f.default, "description": f.metadata["help"],
                      **({"enum": list(f.metadata["choices"])} if f.metadata.get("choices") else {})}
             for f in dataclasses.fields(VideoOptions)}

    @router.post("/videos", status_code=201, summary="Submit a video (a job)",
                 openapi_extra={"requestBody": form_schema(settings, files, extra, NOT_FOR_VIDEO,
                                                           required=(CLIP_FIELD, "style"))},
                 responses={400: {"description": "a bad clip, image or option"},
                            413: {"description": "the clip, an image or the work over a limit"},
                            429: {"description": "the queue is full"}})
    async def create_video(request: Request) -> JSONResponse:
        """Multipart form: the file `clip` (MP4/MOV, MKV/WebM, AVI or GIF), one or more
        files `style`, and options as text fields: any job option, and `temporal_weight`,
        `flow` (dis or farneback), `frame_iterations`, `independent`, `whole_frame_style`
        and `deep_layer_in_later_frames` (true/false). Answers the job, as POST /api/jobs
        does; follow it at /api/jobs/{id}; its result is an MP4."""
        return await submit_form(request, settings, "video", check_video)

    return router
