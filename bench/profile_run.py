#!/usr/bin/env python
"""Where a default run's time goes: per scale, per iteration, and per operator.

    .venv/bin/python bench/profile_run.py --precision fp32 --precision bf16
    .venv/bin/python bench/profile_run.py --size 256 --no-ops        # a quick look

For each precision: one default run (``nstyle.run`` with the defaults, the given size) on
one pair, timing every iteration through the progress callback (so the figures include
everything the loop does: the closure, L-BFGS's own work, the clamp, the checks, the
event); then ``--op-iterations`` iterations of the output scale alone under
``torch.profiler``, reported as the share of each operator family (convolution, padding,
ReLU, pooling, Gram, TV, L-BFGS's vector work) and the time left outside any operator
(Python per step). Prints a table and writes JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import nstyle  # first: it sets how torch's threads wait before torch loads (nstyle.openmp)
import torch

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent.parent / "shared" / "images"

#: operator families, by a substring of the aten name (first match wins)
FAMILIES = (
    ("padding", ("pad", "reflection", "replication")),
    ("convolution", ("conv", "mkldnn")),
    ("relu", ("relu", "threshold", "clamp_min")),
    ("pooling", ("pool",)),
    ("gram / style (bmm, mm)", ("bmm", "aten::mm", "matmul")),
    ("lbfgs vector work (dot, add, mul, div)", ("aten::dot", "aten::add", "aten::mul", "aten::div",
                                                 "aten::sub", "aten::neg")),
    ("copies, fills, casts", ("copy", "fill", "zero", "clone", "empty", "to", "contiguous")),
    ("reductions (sum, mean, abs, isfinite)", ("sum", "mean", "abs", "isfinite", "all", "pow",
                                                "max", "min", "stack")),
)


def family(name: str) -> str:
    for label, keys in FAMILIES:
        if any(k in name for k in keys):
            return label
    return "other"


def timed_run(content, style, size: int, precision: str, options: dict) -> dict:
    stamps: list[tuple[int, float]] = []

    def callback(event):
        stamps.append((event.size, time.perf_counter()))

    t0 = time.perf_counter()
    result = nstyle.run(content, style, size=size, precision=precision, callback=callback, **options)
    wall = time.perf_counter() - t0
    per_scale: dict[int, list[float]] = defaultdict(list)
    previous = None
    for scale_size, t in stamps:
        if previous is not None and previous[0] == scale_size:
            per_scale[scale_size].append(t - previous[1])
        previous = (scale_size, t)
    scales = {}
    for scale_size, times in per_scale.items():
        ran = sum(1 for s, _ in stamps if s == scale_size)
        scales[str(scale_size)] = {
            "iterations": ran, "median_s_per_it": statistics.median(times),
            "optimize_s": result.timings.get(f"optimize_{scale_size}"),
            "targets_s": result.timings.get(f"targets_{scale_size}")}
    return {"wall_s": wall, "iterations": result.iterations, "scales": scales,
            "timings": result.timings, "losses": result.losses}


def op_profile(content, style, size: int, precision: str, iterations: int, options: dict) -> dict:
    """``iterations`` iterations at ``size`` alone (one scale), under the profiler from the
    end of the first iteration (so set-up and oneDNN's first-call work are left out) to
    the end of the run (the final loss evaluation included)."""
    common = dict(options, size=size, precision=precision, scales=[size], tolerance=0,
                  iterations=iterations + 1)
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    marks: list[float] = []

    def callback(event):
        marks.append(time.perf_counter())
        if len(marks) == 1:
            prof.start()

    result = nstyle.run(content, style, callback=callback, **common)
    end = time.perf_counter()
    prof.stop()
    shares: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = {}
    for event in prof.key_averages():
        # self time: each microsecond is counted once, in the operator that spent it
        ops[event.key] = event.self_cpu_time_total / 1e6
        shares[family(event.key)] += event.self_cpu_time_total / 1e6
    in_ops = sum(v for k, v in ops.items() if not k.startswith("Optimizer."))
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:30]
    return {"size": size, "iterations": iterations, "profiled_s": end - marks[0],
            "loop_s_per_it": (marks[-1] - marks[0]) / iterations,
            "after_loop_s": end - marks[-1], "setup_s": marks[0] - (end - result.timings["total"]),
            "in_operators_s": in_ops,
            "families_s": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
            "top_ops_s": dict(top)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--content", default=str(IMAGES / "tubingen.jpg"))
    p.add_argument("--style", default=str(IMAGES / "starry_night.jpg"))
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--precision", action="append", default=[], choices=("fp32", "bf16", "auto"))
    p.add_argument("--op-iterations", type=int, default=4)
    p.add_argument("--no-ops", action="store_true", help="skip the operator profile")
    p.add_argument("--no-run", action="store_true", help="skip the timed default run")
    p.add_argument("--option", action="append", default=[], metavar="NAME=JSON",
                   help="an nstyle option for every run (e.g. scales=[128,256,512])")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    options = {}
    for text in args.option:
        name, _, value = text.partition("=")
        options[name] = json.loads(value)
    content, style = args.content, args.style
    report = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "threads": torch.get_num_threads()},
              "content": args.content, "style": args.style, "size": args.size,
              "options": options, "runs": {}}
    try:
        report["machine"]["load_start"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    for precision in args.precision or ["fp32", "bf16"]:
        entry = {}
        if not args.no_run:
            entry["default_run"] = timed_run(content, style, args.size, precision, options)
            run = entry["default_run"]
            print(f"[{precision}] default {args.size} px: {run['wall_s']:.1f} s, "
                  f"{run['iterations']} iterations")
            for size, s in run["scales"].items():
                print(f"    {size:>5} px: {s['iterations']:4d} it, {s['median_s_per_it']:.3f} s/it "
                      f"(optimize {s['optimize_s']:.1f} s, targets {s['targets_s']:.2f} s)")
        if not args.no_ops:
            entry["ops"] = ops = op_profile(content, style, args.size, precision, args.op_iterations, options)
            print(f"[{precision}] {ops['iterations']} iterations at {args.size} px under the profiler: "
                  f"{ops['loop_s_per_it']:.3f} s/it, then {ops['after_loop_s']:.2f} s to the result; "
                  f"in operators {ops['in_operators_s']:.2f} s of {ops['profiled_s']:.2f} s profiled")
            for label, seconds in ops["families_s"].items():
                print(f"    {label:42s} {seconds:7.2f} s  {100 * seconds / ops['in_operators_s']:5.1f}%")
        report["runs"][precision] = entry
    try:
        report["machine"]["load_end"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = out / f"profile-{stamp}{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
