"""The contact sheet: one photo stylized by each style (rows) at each style weight
(columns), small and fast, so a user chooses a painting and a weight before the big run.

    fig = nstyle.contact_sheet("photo.jpg", ["starry.jpg", "scream.jpg"], [1e4, 1e5, 1e6])
    fig.save("sheet.png")                        # + sheet.png.json, the run record

Every cell is an ordinary ``Stylizer`` run with the sheet's options and its column's style
weight (defaults: 256 px, 60 iterations: a short schedule). The work is shared: the VGG
weights are decoded once per process, each image is decoded once, one ``Stylizer`` (one
network) serves a whole column, and all columns share one ``StyleTargets``, so each
style's Gram targets are computed once, in the first column, and looked up in the others
(the record's ``style_targets`` counts the lookups: hits and misses).

A cell whose run fails (the loss diverged, no memory) is drawn as a grey "failed" box and
the others go on; ``Figure.record['failed']`` counts them. A cancel token or a refusal
before any work (a size that cannot fit) ends the whole sheet.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
from PIL import Image

from nstyle.options.config import MAX_SIZE, MIN_SIZE, Config
from nstyle.core.events import CancelToken, Progress
from nstyle.core.targets import StyleTargets
from nstyle.core.stylizer import Stylizer
from nstyle.core.image_tensors import resize_tensor
from nstyle.errors import BadOption, RunFailed
from nstyle.io.grid import Cell, Figure, Grid
from nstyle.io.images import ImageSource, encode_image, fit_size, load_image, to_pil, to_tensor
from nstyle.io.inputs import describe
from nstyle.io.record import versions
from nstyle.tasks.base import RESULT_PNG, SHEET, TaskContext, TaskOutput, TaskProgress

#: the sheet's defaults under the user's options: small and quick
SHEET_DEFAULTS = {"size": 256, "iterations": 60}
#: the run a sheet previews by default: the default output size
DEFAULT_FOR_SIZE = 512
#: a decade either side of the default style weight (1e5)
DEFAULT_STYLE_WEIGHTS = (1e4, 1e5, 1e6)
MAX_STYLES, MAX_WEIGHTS = 8, 8


@dataclass(frozen=True)
class SheetProgress:
    """One iteration of one cell, counted over the whole sheet."""

    cell: int  # 1-based, in the order run: column by column
    cells: int
    style: int  # row, 0-based
    style_weight: float
    iteration: int  # over the whole sheet
    iterations: int
    event: Progress  # the cell's own event (losses, preview)


def parse_style_weights(value: Any) -> tuple[float, ...]:
    """'1e4,1e5,1e6' or a sequence of numbers -> the columns' style weights (each finite
    and > 0, no repeats, 1..MAX_WEIGHTS of them)."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    if not items:
        raise BadOption("style weights are empty; give a list such as 1e4,1e5,1e6")
    weights = []
    for item in items:
        try:
            w = float(item)
        except (TypeError, ValueError):
            raise BadOption(f"style weights: {item!r} is not a number (give a list such as "
                            "1e4,1e5,1e6)") from None
        if isinstance(item, bool) or not math.isfinite(w) or w <= 0:
            raise BadOption(f"style weights must be finite numbers > 0, got {item!r}")
        weights.append(w)
    if len(set(weights)) != len(weights):
        raise BadOption(f"style weights repeat a value: {','.join(map(fmt_weight, weights))}")
    if len(weights) > MAX_WEIGHTS:
        raise BadOption(f"{len(weights)} style weights; a sheet has at most {MAX_WEIGHTS} columns")
    return tuple(weights)


def fmt_weight(w: float) -> str:
    """1e4 rather than 10000.0 or 1.00e+04: how weights are written on a command line."""
    mantissa, exponent = f"{w:.2e}".split("e")
    e = int(exponent)
    if -2 <= e <= 3:
        return f"{w:g}"
    return f"{mantissa.rstrip('0').rstrip('.')}e{e}"


def style_name(source: ImageSource, index: int) -> str:
    """A row's label: a path's file name without its extension, else 'style N'."""
    if isinstance(source, (str, os.PathLike)):
        return os.path.splitext(os.path.basename(os.fspath(source)))[0] or f"style {index + 1}"
    return f"style {index + 1}"


def content_balance(content_hw: tuple[int, int], size: int, for_size: int) -> float:
    """What the content weight is multiplied by in a sheet made at ``size`` px so that it
    shows the run at ``for_size`` px: the ratio of their output pixels.

    The content loss is a sum over positions and the style loss (Grams divided by M) is not,
    so the same weights at a quarter of the pixels make four times as much style: a small
    sheet would show every column far more stylized than the big run will be, and the
    columns alike. The engine does the same for the coarse scales of one run."""
    h, w = content_hw
    big, small = fit_size(w, h, for_size), fit_size(w, h, size)
    return (big[0] * big[1]) / (small[0] * small[1])


def sheet_config(config: Optional[Config] = None, **options: Any) -> Config:
    """``SHEET_DEFAULTS`` (when no config is given) under ``options``; the style weight
    belongs to the columns and blend weights to a single mixed style, so neither may be set."""
    for name in ("style_weight", "style_blend_weights"):
        if options.get(name) is not None:
            raise BadOption(f"{name} cannot be set for a contact sheet: its columns are style "
                            "weights and each row is one style (use style_weights)")
    return Config.from_options(config or Config.from_options(**SHEET_DEFAULTS), **options)


def contact_sheet(content: ImageSource, styles: Sequence[ImageSource],
                  style_weights: Any = DEFAULT_STYLE_WEIGHTS, config: Optional[Config] = None, *,
                  names: Optional[Sequence[str]] = None, for_size: int = DEFAULT_FOR_SIZE,
                  callback: Optional[Callable[[SheetProgress], None]] = None,
                  on_cell: Optional[Callable[[Image.Image, int], None]] = None,
                  cancel: Optional[CancelToken] = None, **options: Any) -> Figure:
    """``content`` stylized by every style at every style weight, as a labelled grid.

    ``names``: row labels (default: file names). ``callback``: a ``SheetProgress`` after
    every iteration of every cell. ``on_cell(partial_sheet, cells_done)``: after each cell,
    the sheet so far (cells still to come are grey). ``for_size``: the size of the run the
    sheet previews; each cell keeps that run's balance of content and style (see
    ``content_balance``)."""
    config = sheet_config(config, **options)
    weights = parse_style_weights(style_weights)
    styles = list(styles) if isinstance(styles, (list, tuple)) else [styles]
    if not 1 <= len(styles) <= MAX_STYLES:
        raise BadOption(f"a contact sheet takes 1..{MAX_STYLES} style images, got {len(styles)}")
    names = list(names) if names is not None else [style_name(s, i) for i, s in enumerate(styles)]
    if len(names) != len(styles):
        raise BadOption(f"{len(names)} names for {len(styles)} style images")
    if not isinstance(for_size, int) or not MIN_SIZE <= for_size <= MAX_SIZE:
        raise BadOption(f"for_size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {for_size!r}")
    content_t = _tensor(content, "content image")
    balance = content_balance(tuple(content_t.shape[-2:]), config.output_size, for_size)
    style_ts = [_tensor(s, f"style image {i + 1}" if len(styles) > 1 else "style image")
                for i, s in enumerate(styles)]
    run = _SheetRun(Config.from_options(config, content_weight=config.loss.content_weight * balance),
                    content_t, style_ts, weights, names, callback, on_cell, cancel)
    run.all_cells()
    record = {"kind": "contact_sheet", "inputs": {"content": describe(content),
                                                  "styles": [describe(s) for s in styles]},
              "style_weights": list(weights), "rows": names, "for_size": for_size,
              "content_weight_factor": round(balance, 4), "config": config.to_dict(),
              "seed": config.image.seed, "versions": versions(), **run.summary()}
    return Figure(run.render(), record)


def _tensor(source: Any, what: str) -> torch.Tensor:
    """An image source, or an already decoded (1, 3, H, W) tensor (the service's), as the
    tensor ``Stylizer.run`` takes (which checks its shape)."""
    if isinstance(source, torch.Tensor):
        return source
    return to_tensor(load_image(source, what))


class _SheetRun:
    """The cells of one sheet, run column by column (one network per column)."""

    def __init__(self, config: Config, content: torch.Tensor, styles: list[torch.Tensor],
                 weights: tuple[float, ...], names: list[str], callback, on_cell, cancel) -> None:
        self.config, self.content, self.styles, self.weights = config, content, styles, weights
        self.names, self.callback, self.on_cell, self.cancel = names, callback, on_cell, cancel
        self.images: dict[tuple[int, int], Optional[Image.Image]] = {}
        self.cells: list[dict[str, Any]] = []
        self.device, self.precision, self.per_cell = "cpu", "fp32", 0
        self.timings = {"networks": 0.0, "targets": 0.0, "optimize": 0.0}
        # targets do not depend on the style weight: every column shares them
        self.targets = StyleTargets()
        self.t0 = time.perf_counter()

    def all_cells(self) -> None:
        for column, weight in enumerate(self.weights):
            t = time.perf_counter()
            stylizer = Stylizer(Config.from_options(self.config, style_weight=weight),
                                style_targets=self.targets)
            self.timings["networks"] += time.perf_counter() - t
            for row in range(len(self.styles)):
                self.one_cell(stylizer, row, column)
                if self.on_cell is not None:
                    self.on_cell(self.render(), len(self.cells))

    def one_cell(self, stylizer: Stylizer, row: int, column: int) -> None:
        index = len(self.cells)  # cells done so far
        total_cells = len(self.styles) * len(self.weights)
        weight = self.weights[column]

        def on_progress(event: Progress) -> None:
            self.per_cell = event.iterations
            if self.callback is not None:
                self.callback(SheetProgress(index + 1, total_cells, row, weight,
                                            index * event.iterations + event.iteration,
                                            total_cells * event.iterations, event))

        entry: dict[str, Any] = {"row": row, "column": column, "style": self.names[row],
                                 "style_weight": weight}
        try:
            result = stylizer.run(self.content, [self.styles[row]], callback=on_progress,
                                  cancel=self.cancel)
        except RunFailed as exc:
            self.images[(row, column)] = None
            entry["error"] = str(exc)
        else:
            self.images[(row, column)] = result.to_pil()
            self.device, self.precision = result.device, result.precision
            targets = sum(v for k, v in result.timings.items() if k.startswith("targets_"))
            self.timings["targets"] += targets
            self.timings["optimize"] += result.timings.get("optimize", 0.0)
            entry.update(iterations=result.iterations, losses=result.losses,
                         seconds=round(result.timings["total"], 3), targets_seconds=round(targets, 3))
        self.cells.append(entry)

    def render(self) -> Image.Image:
        """The sheet so far: a first row with the photo, then per style its painting and
        its cells (grey until done; 'failed' where the run failed)."""
        size = self.config.output_size
        grid = Grid(title=f"columns: style weight; rows: style ({size} px, "
                          f"{sum(self.config.scale_iteration_counts)} iterations)",
                    column_labels=["input"] + [fmt_weight(w) for w in self.weights])
        photo = to_pil(resize_tensor(self.content, size))
        grid.add_row([Cell(photo)], label="photo")
        for row, name in enumerate(self.names):
            cells = [Cell(to_pil(resize_tensor(self.styles[row], size)))]
            for column in range(len(self.weights)):
                image = self.images.get((row, column))
                done = (row, column) in self.images
                cells.append(Cell(image, "" if image is not None else "failed" if done else "to come",
                                  shape=photo.size))
            grid.add_row(cells, label=name)
        return grid.render(cell=min(size, 512))

    def summary(self) -> dict[str, Any]:
        failed = sum(1 for c in self.cells if "error" in c)
        timings = {k: round(v, 3) for k, v in self.timings.items()}
        timings["total"] = round(time.perf_counter() - self.t0, 3)
        return {"cells": self.cells, "failed": failed, "device": self.device,
                "precision": self.precision, "iterations_per_cell": self.per_cell,
                "style_targets": {"computed": self.targets.misses, "reused": self.targets.hits},
                "timings": timings}


@dataclass
class SheetTask:
    """A contact sheet as a job: ``contact_sheet`` of decoded images, the sheet so far as
    its preview after every cell."""

    kind: ClassVar[str] = SHEET

    config: Config
    content: torch.Tensor
    styles: list[torch.Tensor]
    style_weights: tuple[float, ...]
    #: upload names: the content's, and one per style (its row label)
    content_name: str
    style_names: list[str]
    for_size: int = DEFAULT_FOR_SIZE

    def planned_iterations(self) -> int:
        return len(self.styles) * len(self.style_weights) * sum(self.config.scale_iteration_counts)

    def run(self, context: TaskContext) -> TaskOutput:
        t0 = time.perf_counter()
        last: list[TaskProgress] = []

        def on_progress(p: SheetProgress) -> None:
            last[:] = [TaskProgress(p.iteration, p.iterations, p.event.losses, time.perf_counter() - t0,
                                    part=p.cell, parts=p.cells, phase="sheet")]
            context.report(last[0])

        def on_cell(partial: Image.Image, cells_done: int) -> None:  # the sheet so far
            if last:
                context.report(dataclasses.replace(last[0], preview=lambda: partial, milestone=True))

        rows = [os.path.splitext(n or f"style {i + 1}")[0] for i, n in enumerate(self.style_names)]
        figure = contact_sheet(self.content, self.styles, self.style_weights, self.config, names=rows,
                               for_size=self.for_size, callback=on_progress, on_cell=on_cell,
                               cancel=context.cancel)
        record = dict(figure.record)
        record["timings"] = dict(record["timings"], total=round(time.perf_counter() - t0, 3))
        cells, failed = figure.record["cells"], figure.record["failed"]
        summary = {"iterations": sum(c.get("iterations", 0) for c in cells),
                   "iterations_total": figure.record["iterations_per_cell"] * len(cells),
                   "losses": None, "output_size": list(figure.image.size),
                   "error": f"{failed} of {len(cells)} cells failed (marked on the sheet)" if failed else None}
        return TaskOutput({RESULT_PNG: encode_image(figure.image, ".png")}, record, summary)
