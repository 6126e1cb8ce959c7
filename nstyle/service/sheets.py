"""The contact sheet as a job: POST /api/sheets, and how a worker runs one.

A sheet is one job in the ordinary queue (one at a time with the others, listed, followed
by the same event stream, cancelled, retried and deleted like them), whose result is the
labelled sheet (``nstyle.tasks.sheet.SheetTask``) and whose record is the sheet's record.
Its kind is stored with it (``sheet``); its columns' style weights are kept among its
options (``SHEET_OPTION``). Its previews are the sheet so far; its progress counts the
iterations of every cell.

The request is a job's form (the file ``content``, files ``style``, options as text) plus
``style_weights``; the server's limits apply to the whole sheet (cells x iterations), and
what a sheet cannot use (masks, a keep mask, a starting image, scale mixing, a style
weight or blend weights of its own) is refused with a message that names the field.
"""

from __future__ import annotations

from typing import Any


from nstyle.options.config import MIN_SIZE, Config
from nstyle.errors import BadOption, NStyleError
from nstyle.io.images import fit_size
from nstyle.io.inputs import LoadedInputs
from nstyle.tasks.base import SHEET
from nstyle.tasks.sheet import DEFAULT_FOR_SIZE, SHEET_DEFAULTS, SheetTask, fmt_weight, parse_style_weights
from nstyle.service.store import JobRow
from nstyle.service.uploads import CONTENT_FIELD, STYLE_FIELDS, Submission, Upload, blame, check_submission

#: a sheet's columns (style weights), as the client gave them
SHEET_OPTION = "sheet_style_weights"
#: the size of the run the sheet previews (``nstyle.tasks.sheet.content_balance``)
FOR_SIZE_OPTION = "sheet_for_size"
#: what a sheet takes besides the options: the photo and its style images
SHEET_FILES = (CONTENT_FIELD, *STYLE_FIELDS)
#: options that belong to the sheet itself (its columns, its rows)
NOT_FOR_SHEETS = ("style_weight", "style_blend_weights")


def check_sheet(uploads: list[Upload], fields: list[tuple[str, str, int]], settings,
                decode_gate=None) -> Submission:
    """The whole sheet request checked, as ``check_submission`` checks a job's, plus the
    weights and the sheet's total work; returns the job to store."""
    for u in uploads:
        if u.field not in SHEET_FILES:
            raise blame(BadOption(f"a contact sheet takes only the photo ('content') and style "
                                  f"images ('style'), not {u.field!r}"), u.field)
    weights_text, for_size, options = None, str(DEFAULT_FOR_SIZE), []
    for name, value, position in fields:
        if name == "style_weights":
            weights_text = value
        elif name == "for_size":
            for_size = value.strip() or for_size
        elif name in NOT_FOR_SHEETS and value.strip():
            raise blame(BadOption(f"{name} cannot be set for a contact sheet: its columns are "
                                  "style weights (style_weights) and each row is one style"), name)
        elif name not in NOT_FOR_SHEETS:
            options.append((name, value, position))
    try:
        weights = parse_style_weights(weights_text if weights_text is not None else "1e4,1e5,1e6")
    except NStyleError as exc:
        raise blame(exc, "style_weights") from None
    if not for_size.isdigit() or not MIN_SIZE <= int(for_size) <= settings.max_size:
        raise blame(BadOption(f"for_size must be an integer in {MIN_SIZE}..{settings.max_size}, "
                              f"got {for_size!r}"), "for_size")
    given = {name for name, value, _ in options if value.strip()}
    options += [(k, str(v), -1) for k, v in SHEET_DEFAULTS.items() if k not in given]
    sub = check_submission(uploads, options, settings, decode_gate)
    _check_sheet_work(sub, len(weights), settings)
    sub.options[SHEET_OPTION] = ",".join(fmt_weight(w) for w in weights)
    sub.options[FOR_SIZE_OPTION] = for_size
    sub.kind = SHEET
    return sub


def _check_sheet_work(sub: Submission, columns: int, settings) -> None:
    """The server's per-job bounds, over every cell of the sheet together."""
    config = sub.config
    cells = columns * sum(1 for f in sub.files if f.field == "styles")
    per_cell = sum(config.scale_iteration_counts)
    field = "scale_iterations" if config.scale.scale_iterations is not None else "iterations"
    if cells * per_cell > settings.max_iterations:
        raise blame(BadOption(f"{cells} cells x {per_cell} iterations is {cells * per_cell:,} "
                              f"iterations, over this server's limit of {settings.max_iterations:,} "
                              "per job; use fewer iterations, styles or weights"), field)
    content = sub.entry("content").image
    pixels = [(lambda wh: wh[0] * wh[1])(fit_size(content.width, content.height, s))
              for s in config.scale_sizes]
    work = cells * sum(p * n for p, n in zip(pixels, config.scale_iteration_counts))
    if work > settings.max_megapixel_iterations * 1e6:
        raise blame(BadOption(f"this sheet asks for {work / 1e6:,.0f} million pixel-iterations "
                              f"({cells} cells), over this server's limit of "
                              f"{settings.max_megapixel_iterations:,.0f} million; use a smaller "
                              "size, fewer iterations, styles or weights"), field)


def sheet_task(row: JobRow, config: Config, loaded: LoadedInputs, names: dict[str, Any]) -> SheetTask:
    """The stored sheet job as the task a worker runs."""
    return SheetTask(config, loaded.content, loaded.styles, parse_style_weights(row.options[SHEET_OPTION]),
                     names["content"], list(names.get("styles") or []),
                     int(row.options.get(FOR_SIZE_OPTION, DEFAULT_FOR_SIZE)))
