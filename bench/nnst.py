#!/usr/bin/env python
"""Time and memory of --method nnst against the Gram default at one size (issue 25). Not a test.

    flock /work/notes/heavy.lock .venv/bin/python bench/nnst.py --size 512 --steps 3

Each method runs in a fresh process (its peak resident memory is its own), on the same
pair (default: ../shared/images' Tübingen and The Starry Night). The Gram default runs
whole (its own schedule and early stop). NNST's full schedule is 200 Adam steps at each of
its scales and in the final pass (1000 at 512 px), far too long for a CPU bench, so it runs
--steps per phase and each phase is timed apart: its set-up (the nearest-neighbour matching,
the painting's features) and the median seconds of a step; the full run's time is
extrapolated as the sum over phases of set-up + 200 steps. Prints a table and writes JSON.
Compare the ratios, and say what else ran (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "images"


def child(method: str, content: str, style: str, size: int, steps: int, precision: str = "auto") -> dict:
    import torch
    from PIL import Image

    from nstyle.core import nnst
    from nstyle.core.stylizer import Stylizer
    from nstyle.io.images import to_tensor
    from nstyle.options.config import Config

    c, s = (to_tensor(Image.open(p).convert("RGB")) for p in (content, style))
    options = dict(size=size, device="cpu", seed=0, precision=precision)
    if method == "nnst":
        options.update(method="nnst", scale_iterations=(steps,))
    config = Config.from_options(**options)
    stamps: list[tuple[float, int, int]] = []
    t0 = time.perf_counter()
    result = Stylizer(config).run(c, [s], callback=lambda e: stamps.append((time.perf_counter(), e.scale, e.size)))
    total = time.perf_counter() - t0
    row = {"method": method, "size": size, "precision": result.precision, "iterations": result.iterations,
           "seconds": round(total, 1),
           "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "threads": torch.get_num_threads()}
    if method == "nnst":
        phases = []
        previous = t0
        for scale in sorted({sc for _, sc, _ in stamps}):
            times = [(t, sz) for t, sc, sz in stamps if sc == scale]
            steps_s = [b[0] - a[0] for a, b in zip(times, times[1:])]
            step = statistics.median(steps_s) if steps_s else times[0][0] - previous
            setup = times[0][0] - previous - step  # the matching before the first step
            phases.append({"phase": scale, "size": times[0][1], "final_pass": scale == max(sc for _, sc, _ in stamps),
                           "setup_s": round(setup, 2), "step_s": round(step, 3)})
            previous = times[-1][0]
        row["phases"] = phases
        row["extrapolated_full_run_s"] = round(sum(p["setup_s"] + nnst.STEPS * p["step_s"] for p in phases), 0)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=3, help="NNST steps per phase actually run")
    p.add_argument("--content", default=str(SHARED / "tubingen.jpg"))
    p.add_argument("--style", default=str(SHARED / "starry_night.jpg"))
    p.add_argument("--methods", default="gatys,nnst")
    p.add_argument("--precision", default="auto",
                   help="--precision of both methods (auto: bf16 for gatys where the CPU has it, fp32 for nnst)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.content, args.style, args.size, args.steps, args.precision)))
        return 0
    rows = []
    for method in args.methods.split(","):
        load = os.getloadavg()[0]
        out = subprocess.run([sys.executable, __file__, "--child", method, "--size", str(args.size),
                              "--steps", str(args.steps), "--content", args.content, "--style", args.style,
                              "--precision", args.precision],
                             capture_output=True, text=True, check=True)
        rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "load_before": load,
                     "load_after": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    by = {r["method"]: r for r in rows}
    print(f"\n{'method':8} {'run s':>8} {'full run s':>11} {'peak RSS MiB':>13}")
    for r in rows:
        full = r.get("extrapolated_full_run_s", r["seconds"])
        print(f"{r['method']:8} {r['seconds']:8.1f} {full:11.0f} {r['peak_rss_mib']:13d}")
    if "gatys" in by and "nnst" in by:
        g, n = by["gatys"], by["nnst"]
        print(f"nnst / gatys: time x{n['extrapolated_full_run_s'] / g['seconds']:.1f} (extrapolated), "
              f"memory x{n['peak_rss_mib'] / g['peak_rss_mib']:.2f}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    target = HERE / "results" / f"nnst-{stamp}.json"
    target.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
