"""The run record: a small JSON file beside each output, enough to repeat the run."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import Any, Optional, Sequence

import numpy
import PIL
import torch

from .config import Config
from .engine import Result


def versions() -> dict[str, str]:
    from . import __version__

    return {"nstyle": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pillow": PIL.__version__}


def _describe(source: Any) -> Any:
    if isinstance(source, (str, os.PathLike)):
        return os.path.abspath(source)
    return f"<{type(source).__name__}>"


def build_record(config: Config, result: Result, *, content: Any, styles: Sequence[Any],
                 output: Optional[str] = None, command: Optional[Sequence[str]] = None) -> dict[str, Any]:
    h, w = result.image.shape[-2:]
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": list(command) if command is not None else None,
        "inputs": {"content": _describe(content), "styles": [_describe(s) for s in styles]},
        "output": os.path.abspath(output) if output else None,
        "output_size": [w, h],
        "config": config.to_dict(),
        "seed": config.image.seed,
        "device": result.device,
        "precision": result.precision,
        "versions": versions(),
        "platform": {"system": platform.system(), "machine": platform.machine(),
                     "threads": torch.get_num_threads(), "argv0": sys.argv[0]},
        "iterations": result.iterations,
        "stopped_early": result.stopped_early,
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        # the coarse-to-fine schedule as run: sizes, iterations, tiles, memory estimates
        "plan": result.plan,
        "losses": result.losses,
    }
