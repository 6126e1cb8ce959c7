"""The /sheets route: a contact sheet submitted as a job (checked by ``nstyle.service.sheets``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from nstyle.service.routes.common import submit_form
from nstyle.service.form_schema import form_schema, job_files
from nstyle.service.sheets import NOT_FOR_SHEETS, SHEET_FILES, check_sheet
from nstyle.tasks.sheet import DEFAULT_FOR_SIZE


def sheet_router(settings) -> APIRouter:
    """The /sheets route; ``routes.api_router`` mounts it under /api, behind the token."""
    router = APIRouter()
    files = {k: v for k, v in job_files(settings).items() if k in SHEET_FILES}
    extra = {"style_weights": {"type": "string", "default": "1e4,1e5,1e6", "description":
                               "the columns' style weights, comma-separated"},
             "for_size": {"type": "integer", "default": DEFAULT_FOR_SIZE, "description":
                          "the size of the run the sheet previews"}}

    @router.post("/sheets", status_code=201, summary="Submit a contact sheet (a job)",
                 openapi_extra={"requestBody": form_schema(settings, files, extra, NOT_FOR_SHEETS)},
                 responses={400: {"description": "a bad image, option or weights list"},
                            413: {"description": "an upload, image or the sheet's work over a limit"},
                            429: {"description": "the queue is full"}})
    async def create_sheet(request: Request) -> JSONResponse:
        """Multipart form: the file `content`, one file `style` per row, `style_weights`
        (the columns, comma-separated; default 1e4,1e5,1e6), `for_size` (the size of the
        run it previews, default 512: each cell keeps that run's balance of content and
        style) and any other job option as
        a text field (size defaults to 256 and iterations to 60 here). Answers the job,
        as POST /api/jobs does; follow it at /api/jobs/{id}."""
        return await submit_form(request, settings, "sheet", check_sheet)

    return router
