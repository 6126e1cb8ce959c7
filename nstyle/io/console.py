"""What a run shows on the terminal: one progress bar, the same for every command."""

from __future__ import annotations

import sys
from typing import Optional

from tqdm import tqdm


def progress_bar(total: Optional[int], unit: str, desc: str, *, initial: int = 0, quiet: bool = False):
    """A tqdm bar on stderr, shown only on a terminal (never in a log or a pipe) and unless
    ``quiet``; ``total`` None: unknown until the work says."""
    return tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True, leave=True,
                file=sys.stderr, disable=quiet or not sys.stderr.isatty())
