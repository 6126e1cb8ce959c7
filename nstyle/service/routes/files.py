"""What a job made or was given: its result, run record, a zip of both with the inputs,
its latest preview, and each uploaded image (or its thumbnail)."""

from __future__ import annotations

import io
import zipfile

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, Response

from nstyle.service.errors import NotFound
from nstyle.service.jobs import JobManager
from nstyle.service.settings import ServiceSettings
from nstyle.service.store import RECORD_FILE, RESULT_FILE, JobRow, input_entries
from nstyle.service.uploads import media_type
from nstyle.service.videos import VIDEO_RESULT_FILE
from nstyle.tasks.base import VIDEO
from nstyle.service.routes.common import finished, manager_of

NO_RESULT = {409: {"description": "no result (yet)"}}


def router(settings: ServiceSettings) -> APIRouter:
    r = APIRouter()
    r.add_api_route("/jobs/{job_id}/result", get_result, methods=["GET"],
                    summary="The result image (PNG), or a video job's clip (MP4)",
                    response_class=FileResponse, responses=NO_RESULT)
    r.add_api_route("/jobs/{job_id}/record", get_record, methods=["GET"], responses=NO_RESULT,
                    summary="The run record (config, versions, timings, losses)")
    r.add_api_route("/jobs/{job_id}/bundle", get_bundle, methods=["GET"], response_class=Response,
                    summary="A zip of the result, its record and the inputs", responses=NO_RESULT)
    r.add_api_route("/jobs/{job_id}/preview", get_preview, methods=["GET"], response_class=Response,
                    summary="The latest preview image of a job (PNG)")
    r.add_api_route("/jobs/{job_id}/inputs/{key}", get_input, methods=["GET"],
                    summary="An uploaded image, or its thumbnail", response_class=FileResponse)
    return r


def get_result(job_id: str, manager: JobManager = Depends(manager_of)) -> FileResponse:
    """The result: a PNG, or an MP4 for a video job."""
    row = finished(manager.get(job_id))
    name, media_type = result_file(row)
    return FileResponse(manager.store.file(job_id, name), media_type=media_type,
                        filename=f"nstyle-{job_id}{name[name.rindex('.'):]}")


def result_file(row: JobRow) -> tuple[str, str]:
    """(stored file name, media type) of a job's result."""
    return (VIDEO_RESULT_FILE, "video/mp4") if row.kind == VIDEO else (RESULT_FILE, "image/png")


def get_record(job_id: str, manager: JobManager = Depends(manager_of)) -> FileResponse:
    finished(manager.get(job_id))
    return FileResponse(manager.store.file(job_id, RECORD_FILE), media_type="application/json",
                        filename=f"nstyle-{job_id}.json")


def get_bundle(job_id: str, manager: JobManager = Depends(manager_of)) -> Response:
    row = finished(manager.get(job_id))
    return Response(_bundle(row, manager), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="nstyle-{job_id}.zip"'})


def get_preview(job_id: str, manager: JobManager = Depends(manager_of)) -> Response:
    manager.get(job_id)
    png = manager.preview_png(job_id)
    if png is None:
        raise NotFound(f"job {job_id} has no preview yet")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


def get_input(job_id: str, key: str, thumbnail: bool = False,
              manager: JobManager = Depends(manager_of)) -> FileResponse:
    row = manager.get(job_id)
    entry = next((e for e in input_entries(row.inputs) if e["key"] == key), None)
    if entry is None:
        raise NotFound(f"job {job_id} has no input {key!r} (content, style-1, ...)")
    if thumbnail:
        return FileResponse(manager.store.file(job_id, f"{key}.thumb.png"), media_type="image/png")
    # the media type of its real format (the stored name's extension), whatever the
    # client's file name said
    return FileResponse(manager.store.file(job_id, entry["file"]), filename=entry["name"],
                        media_type=media_type(entry["file"]))


def _bundle(row: JobRow, manager: JobManager) -> bytes:
    """result.png (result.mp4), record.json and inputs/<key>-<name> in one zip (images are stored, not
    deflated: they are compressed already)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        name = result_file(row)[0]
        z.write(manager.store.file(row.id, name), name)
        z.write(manager.store.file(row.id, RECORD_FILE), "record.json", zipfile.ZIP_DEFLATED)
        for e in input_entries(row.inputs):
            name = e["name"].replace("/", "_")
            z.write(manager.store.file(row.id, e["file"]), f"inputs/{e['key']}-{name}")
    return buf.getvalue()
