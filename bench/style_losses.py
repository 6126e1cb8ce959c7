#!/usr/bin/env python
"""Seconds per iteration and peak memory of each --style-loss at one size (issue 15).
Not a test; a few minutes on 2 cores.

    .venv/bin/python bench/style_losses.py                          # 512 px, 5 iterations per loss
    .venv/bin/python bench/style_losses.py --size 256 --iterations 3 --losses gram,meancov

Each loss runs in a fresh process (so its peak resident memory is its own): one scale at
--size (no coarse-to-fine, no early stop), content scikit-image's astronaut, style the
shipped Starry Night, default options otherwise. Reported per loss: the median seconds of
an iteration (the first left out: it includes one-off set-up), the seconds spent before
the first iteration on the style targets (for neighbors: the nearest-neighbour matching
too), the peak RSS of the process, and each figure's ratio to gram's. The losses take
turns (--rounds), since a shared machine's load moves; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LOSSES = ("gram", "meancov", "neighbors")


def one(loss: str, size: int, iterations: int) -> dict:
    """Runs in the child process: one loss, returns its figures."""
    import torch
    from skimage import data

    from nstyle.options.config import Config
    from nstyle.core.stylizer import Stylizer
    from nstyle.io.example import example_painting
    from nstyle.io.images import to_tensor
    from PIL import Image

    content = to_tensor(Image.fromarray(data.astronaut()))
    style = to_tensor(example_painting())
    config = Config.from_options(style_loss=loss, size=size, scales=(size,), iterations=iterations,
                                 tolerance=0.0, device="cpu")
    stamps: list[float] = []
    result = Stylizer(config).run(content, [style], callback=lambda e: stamps.append(time.perf_counter()))
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {"loss": loss, "size": size, "iterations": result.iterations,
            "seconds_per_iteration": statistics.median(steps) if steps else None,
            "targets_seconds": result.timings.get(f"targets_{size}"),
            "first_iteration_seconds": result.timings["optimize"] - sum(steps),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--losses", default=",".join(LOSSES))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, args.size, args.iterations)))
        return 0
    rows = []
    for _ in range(args.rounds):
        for loss in args.losses.split(","):
            load = os.getloadavg()[0]
            out = subprocess.run([sys.executable, __file__, "--one", loss, "--size", str(args.size),
                                  "--iterations", str(args.iterations)],
                                 capture_output=True, text=True, check=True)
            rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "load_before": load})
    by_loss: dict[str, dict] = {}
    for loss in args.losses.split(","):
        mine = [r for r in rows if r["loss"] == loss]
        by_loss[loss] = {k: statistics.median(r[k] for r in mine)
                         for k in ("seconds_per_iteration", "targets_seconds", "peak_rss_mib")}
    base = by_loss.get("gram")
    print(f"{'loss':<10} {'s/iteration':>12} {'x gram':>7} {'targets s':>10} {'peak RSS MiB':>13} {'x gram':>7}")
    for loss, r in by_loss.items():
        ratio = (lambda k: f"{r[k] / base[k]:.2f}") if base else (lambda k: "-")
        print(f"{loss:<10} {r['seconds_per_iteration']:>12.2f} {ratio('seconds_per_iteration'):>7} "
              f"{r['targets_seconds']:>10.1f} {r['peak_rss_mib']:>13.0f} {ratio('peak_rss_mib'):>7}")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"style_losses-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "machine": platform.processor() or platform.machine(),
                                "cpus": os.cpu_count(), "runs": rows, "median": by_loss}, indent=2))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
