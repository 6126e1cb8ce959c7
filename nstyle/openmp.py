"""How torch's OpenMP threads wait: passively, unless the user said otherwise.

torch's CPU kernels run on OpenMP (libgomp) threads, which by default spin for a while
at the end of every parallel region before they sleep. On a machine whose cores are
busy with other work (the 2-core machines here, shared with test suites and other
runs), a spinning thread takes the core from the one its team is waiting for, and an
iteration takes several times as long: at 128 px with two other processes running,
4.4-5.0 s against 0.5-0.76 s with passive waiting (bench/profile_run.py, alternating;
docs/benchmark.md). libgomp reads ``OMP_WAIT_POLICY`` once, when torch loads it, so
this has to happen before the first ``import torch``: ``nstyle/__init__`` calls it first
thing. A value the user set is kept; when torch is already loaded nothing is changed
(it would not take effect, and the environment would then say something untrue).
"""

from __future__ import annotations

import os
import sys

#: the value set when the user has set none
WAIT_POLICY = "PASSIVE"


def prefer_passive_wait() -> bool:
    """Sets ``OMP_WAIT_POLICY`` to passive for this process and its children, unless it is
    set or torch is already loaded; returns whether it set it."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return True
