"""The run record: a small JSON file beside each output, enough to repeat the run.

It names inputs only as the front end that received them describes them (paths as the
user typed them on a command line, upload names on a server): never a path the user did
not give, so a server's record reveals nothing of its disk.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
from typing import Any, Optional, Sequence

import numpy
import PIL
import torch

from nstyle.options.config import Config
from nstyle.core.events import Progress, Result
from nstyle.version import __version__


def versions() -> dict[str, str]:
    return {"nstyle": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pillow": PIL.__version__}


def _short(x: float) -> float:
    """4 significant digits: the plot needs no more, and the record stays small."""
    return float(f"{x:.4g}") if math.isfinite(x) else x


class LossHistory:
    """Collects every iteration's loss terms from the progress events (call it with each
    ``Progress``), column by column: ``iteration``, ``scale``, ``phase``, ``elapsed`` and one
    list per loss term."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {"iteration": [], "scale": [], "phase": [],
                                              "elapsed": []}

    def __call__(self, event: Progress) -> None:
        n = len(self.columns["iteration"])
        for name, value in (("iteration", event.iteration), ("scale", event.scale),
                            ("phase", event.phase), ("elapsed", round(event.elapsed, 3))):
            self.columns[name].append(value)
        for term, value in event.losses.items():
            # a term first seen now (the mix phase has other terms) is missing before
            self.columns.setdefault(term, [None] * n).append(_short(value))
        for column in self.columns.values():
            if len(column) == n:
                column.append(None)

    def to_dict(self) -> dict[str, list[Any]]:
        return self.columns


def planned_iterations(result: Result, config: Optional[Config] = None) -> int:
    """The run's total iterations as planned: the sum of its scales' (and the scale mixing's)."""
    return result.plan.total_iterations if result.plan is not None else result.iterations


def build_record(config: Config, result: Result, *, inputs: dict[str, Any],
                 output: Optional[str] = None, command: Optional[Sequence[str]] = None,
                 history: Optional[LossHistory] = None,
                 mixed_style: Optional[str] = None) -> dict[str, Any]:
    """``inputs``: the front end's description of the inputs (``Inputs.describe`` or the
    upload names); ``output``: as the user gave it, or None; ``mixed_style``: where the
    front end saved the style image the scale mixing made (``Result.mixed_style``)."""
    h, w = result.image.shape[-2:]
    record = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": list(command) if command is not None else None,
        "inputs": inputs,
        "output": output,
        "output_size": [w, h],
        "config": config.to_dict(),
        "seed": config.image.seed,
        "device": result.device,
        "precision": result.precision,
        "versions": versions(),
        "platform": {"system": platform.system(), "machine": platform.machine(),
                     "threads": torch.get_num_threads()},
        "iterations": result.iterations,
        "planned_iterations": planned_iterations(result, config),
        "stopped_early": result.stopped_early,
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        # the coarse-to-fine schedule as run: sizes, iterations, tiles, memory estimates
        "plan": result.plan.to_dict() if result.plan is not None else None,
        "losses": result.losses,
        # every iteration's loss terms, column by column (for a plot)
        "history": history.to_dict() if history is not None else None,
    }
    if result.mixed_style is not None:
        # the style the run actually used, made from fine_style and coarse_style
        mh, mw = result.mixed_style.shape[-2:]
        record["mixed_style"] = {"path": mixed_style, "size": [mw, mh]}
    return record
