#!/usr/bin/env python
"""Batch throughput: images per minute for 1 and 2 local workers and for Ray, and what the
shared style targets save. Not a test; short by default (a few minutes on 2 cores).

    .venv/bin/python bench/batch.py                              # 256 px, 4 pairs, 8 iterations, 2 rounds
    .venv/bin/python bench/batch.py --pairs 8 --iterations 20 --rounds 3 --backends local1,local2

Backends, each over the same pairs in a fresh output folder, taking turns (--rounds times):
  local1  one worker process with every core's thread (workers x threads = cores)
  local2  two worker processes, cores/2 threads each (on 2 cores: the default pool)
  ray     a local Ray instance with every core, one thread per task (Ray's start-up is
          timed apart: a cluster is started once and serves many batches)
  local2-unshared   local2 with every pair computing its own style targets

Reported per backend: wall images/min (pool start-up, VGG loads and all, the figure a user
sees for this batch), steady images/min (workers / median seconds of one pair: what a
long batch tends to), and the median CPU seconds of one pair (its worker process's CPU
time, all threads) with what they give on a quiet machine: cores x 60 / CPU seconds. On a
shared machine wall times move with the others' load; CPU time moves much less. For the shared targets: the seconds one style's targets take at
this size (the work each pair no longer does), and the end-to-end difference of
local2-unshared against local2. Contents are scikit-image's photos, the style the shipped
Starry Night. Timings are wall-clock on a machine that may be shared with other work
(the load average is recorded): compare the backends of one run, not runs of two days.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry",
          "motorcycle_left", "cat")
BACKENDS = ("local1", "local2", "ray", "local2-unshared")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def make_inputs(folder: Path, pairs: int) -> tuple[list[str], str]:
    """``pairs`` photos (at most 512 px) and the style, written as files a batch reads."""
    from PIL import Image
    from skimage import data

    from nstyle.io.example import example_painting

    names = [n for n in PHOTOS if hasattr(data, n)]
    photos = folder / "photos"
    photos.mkdir()
    for i in range(pairs):
        name = names[i % len(names)]
        img = Image.fromarray(getattr(data, name)()).convert("RGB")
        img.thumbnail((512, 512))
        img.rotate(90 * (i // len(names))).save(photos / f"{i:02d}_{name}.png")
    style = folder / "starry_night.jpg"
    example_painting().save(style)
    return [str(photos)], str(style)


def style_target_seconds(config, style_path: str, repeats: int = 3) -> float:
    """Median seconds to compute one style's targets for every scale (VGG already loaded)."""
    from nstyle.core.targets import StyleTargets
    from nstyle.core.stylizer import Stylizer
    from nstyle.io.images import load_image, to_tensor

    style = to_tensor(load_image(style_path))
    times = []
    for _ in range(repeats + 1):  # the first pass warms the kernels up
        # a fresh Stylizer each time: it also keeps the last targets it computed
        stylizer = Stylizer(config, style_targets=StyleTargets())
        t = time.perf_counter()
        stylizer.network.prepare_style_targets([style])
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


def run_backend(name: str, contents, style: str, out: Path, config, cores: int) -> dict:
    from nstyle.exec import pool
    from nstyle.tasks import batch

    plan = batch.plan_batch(contents, [style], str(out), config)
    kwargs: dict = {"progress": False, "share_style_targets": not name.endswith("unshared")}
    if name == "local1":
        kwargs.update(workers=1, threads=cores)
    elif name.startswith("local2"):
        kwargs.update(workers=2, threads=max(1, cores // 2))
    elif name == "ray":
        kwargs.update(cluster="auto", threads=1)
    t = time.perf_counter()
    summary = pool.run_batch(plan, **kwargs)
    wall = time.perf_counter() - t
    done = [r for r in summary.rows if r["state"] == batch.DONE]
    if len(done) != len(summary.rows):
        raise SystemExit(f"{name}: {summary.failed} pairs failed: "
                         f"{[r['error'] for r in summary.rows if r['error']]}")
    per_pair = statistics.median(r["seconds"] for r in done)
    cpu = statistics.median(r["cpu_seconds"] for r in done)
    workers = summary.info["workers"]
    return {"backend": name, "workers": workers, "threads": summary.info["threads"],
            "pairs": len(done), "wall_seconds": round(wall, 2),
            "wall_images_per_minute": round(60 * len(done) / wall, 2),
            "median_pair_seconds": round(per_pair, 2),
            "steady_images_per_minute": round(60 * workers / per_pair, 2),
            "median_pair_cpu_seconds": round(cpu, 2),
            # what the machine would do with nothing else running: every core busy with
            # these pairs, each costing its measured CPU time
            "quiet_images_per_minute": round(60 * cores / cpu, 2),
            "style_targets_computed_per_pair": sorted({r["style_targets_computed"] for r in done}),
            "style_targets_seconds": summary.info["style_targets"].get("seconds")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="each backend this many times, the "
                   "backends taking turns (so a change in the machine's load hits them all)")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--out", default=None, help="JSON file (default: bench/results/batch-<time>.json)")
    args = p.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise SystemExit(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")

    from nstyle.options.config import Config

    # --tolerance 0: every pair runs exactly --iterations, so the backends do equal work
    config = Config.from_options(size=args.size, iterations=args.iterations, tolerance=0.0,
                                 device="cpu")
    cores = os.cpu_count() or 1
    results: dict = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "machine": {"cores": cores, "cpu": cpu_model(),
                                 "load_average_at_start": os.getloadavg()},
                     "size": args.size, "iterations": args.iterations, "pairs": args.pairs,
                     "backends": []}
    with tempfile.TemporaryDirectory() as tmp:
        contents, style = make_inputs(Path(tmp), args.pairs)
        results["style_targets_seconds_per_style"] = round(style_target_seconds(config, style), 3)
        if "ray" in backends:
            import ray

            t = time.perf_counter()
            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
            results["ray_start_seconds"] = round(time.perf_counter() - t, 2)
        runs: dict[str, list[dict]] = {name: [] for name in backends}
        for round_ in range(args.rounds):
            for name in backends:
                row = run_backend(name, contents, style, Path(tmp) / f"{name}-{round_}", config, cores)
                row["round"], row["load_average"] = round_, os.getloadavg()[0]
                runs[name].append(row)
                print(json.dumps(row), flush=True)
        results["runs"] = [r for rows in runs.values() for r in rows]
        results["backends"] = [median_row(rows) for rows in runs.values()]
    results["machine"]["load_average_at_end"] = os.getloadavg()
    by = {r["backend"]: r for r in results["backends"]}
    if "local2" in by and "local2-unshared" in by:
        results["shared_targets_saving"] = {
            "per_pair_seconds_measured": results["style_targets_seconds_per_style"],
            "end_to_end_median_pair_seconds": [by["local2-unshared"]["median_pair_seconds"],
                                               by["local2"]["median_pair_seconds"]]}
    print_table(results)
    out = Path(args.out) if args.out else RESULTS / f"batch-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def median_row(rows: list[dict]) -> dict:
    """A backend's figures over its rounds: the median of each."""
    out = dict(rows[0])
    for key in ("wall_seconds", "wall_images_per_minute", "median_pair_seconds",
                "steady_images_per_minute", "median_pair_cpu_seconds", "quiet_images_per_minute"):
        out[key] = round(statistics.median(r[key] for r in rows), 2)
    out.pop("round", None), out.pop("load_average", None)
    out["rounds"] = len(rows)
    return out


def print_table(results: dict) -> None:
    print(f"\nmedians over {results['backends'][0]['rounds']} rounds; "
          f"{results['pairs']} pairs at {results['size']} px, {results['iterations']} iterations "
          f"each, {results['machine']['cores']} cores (load average at start "
          f"{results['machine']['load_average_at_start'][0]:.1f})")
    print(f"{'backend':18s} {'workers x threads':>17s} {'wall s':>7s} {'img/min wall':>12s} "
          f"{'s/pair':>7s} {'img/min steady':>14s} {'cpu s/pair':>10s} {'img/min quiet':>13s}")
    for r in results["backends"]:
        print(f"{r['backend']:18s} {str(r['workers']) + ' x ' + str(r['threads']):>17s} "
              f"{r['wall_seconds']:7.1f} {r['wall_images_per_minute']:12.2f} "
              f"{r['median_pair_seconds']:7.2f} {r['steady_images_per_minute']:14.2f} "
              f"{r['median_pair_cpu_seconds']:10.2f} {r['quiet_images_per_minute']:13.2f}")
    print(f"one style's targets at every scale: {results['style_targets_seconds_per_style']:.3f} s "
          "(computed once per batch instead of once per pair)")
    if "ray_start_seconds" in results:
        print(f"Ray start-up (not in the figures above): {results['ray_start_seconds']:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
