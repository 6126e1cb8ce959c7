#!/usr/bin/env python
"""The speed figures of docs/benchmark.md, side by side in one run. Not a test.

    .venv/bin/python bench/speed.py                                  # everything (about an hour on 2 cores)
    .venv/bin/python bench/speed.py --sizes 256 --pairs 1 --video-frames 2     # minutes

Three parts, each skippable (``--sizes ''``, ``--pairs 0``, ``--video-frames 0``):

1. Per iteration, at each ``--sizes``: nstyle's defaults on one scale (fp32 and bf16),
   pastiche (the PyPI package, fp32, the paper's function, through bench/benchmark.py's
   worker) and the floor: a plain-torch VGG19 (``nn.Conv2d`` with zero padding, in-place
   ReLU, average pooling) up to relu5_1, forward and the input gradient of a trivial loss
   on the layers nstyle reads, in fp32 and bf16, contiguous and channels_last (the floor
   is the faster layout). Every timing runs in a fresh subprocess and the kinds alternate
   (rotating order per repeat), so the machine's load falls on all of them alike; medians
   over ``--repeats``, after ``--warmup`` untimed iterations.
2. The default run (``nstyle.run`` at ``--pair-size``, with each ``--schedule``'s
   options) on ``--pairs`` of the shared pairs (bench/quality.py's rotation of
   ../shared/images), in each ``--pair-precisions``: wall time from the call to the
   image (targets and network included, interpreter start-up not) and the iterations
   each scale ran. One subprocess per run.
3. Video: a ``--video-frames`` pan (bench/video.py's clip) at ``--video-size`` with the
   default video options: the first frame's seconds and the mean seconds of the later
   frames (each starts from the previous output warped), in each ``--video-precisions``.

Every subprocess runs with ``OMP_WAIT_POLICY=PASSIVE`` unless it is set (what importing
nstyle sets, ``nstyle.openmp``), so the tools and the floor wait alike on a shared machine.
Prints a table, writes JSON under bench/results/. Wall-clock figures on a shared machine:
the load average at the start and end is recorded; compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

MARK = "@@SPEED@@"
IMAGES = ROOT.parent / "shared" / "images"
#: the per-iteration kinds, in the order of the first repeat (rotated each repeat)
KINDS = ("nstyle-fp32", "nstyle-bf16", "pastiche", "floor-fp32", "floor-bf16")
#: the layers the floor's loss reads: nstyle's defaults (content relu4_2, style relu1_1..5_1)
FLOOR_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")


def load_average() -> list[float]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


# ============================================================================ workers


def work_nstyle(job: dict) -> dict:
    """nstyle's defaults on one scale of ``size``: seconds per iteration (every iteration
    as the loop runs it: closure, L-BFGS, clamp, checks, the progress event)."""
    import torch

    from nstyle.core.stylizer import Stylizer
    from nstyle.io.images import load_image, to_tensor
    from nstyle.options.config import Config

    n = job["warmup"] + job["iterations"]
    config = Config.from_options(size=job["size"], scales=(job["size"],), iterations=n, tolerance=0.0,
                                 precision=job["precision"])
    stylizer = Stylizer(config)
    content = to_tensor(load_image(job["content"]))
    style = to_tensor(load_image(job["style"]))
    stamps: list[float] = []
    stylizer.run(content, [style], callback=lambda e: stamps.append(time.perf_counter()))
    # the first interval starts at iteration 1's end: targets and set-up are not in it
    per = [b - a for a, b in zip(stamps, stamps[1:])][max(job["warmup"] - 1, 0):]
    return {"s_per_iter": statistics.median(per), "per_iteration": per,
            "precision": stylizer.precision, "threads": torch.get_num_threads()}


def work_pastiche(job: dict) -> dict:
    import benchmark

    result = benchmark.work_speed({"tool": "pastiche", "size": job["size"], "content": job["content"],
                                   "style": job["style"], "iterations": job["iterations"],
                                   "warmup": job["warmup"], "threads": 0, "scale": "auto"})
    return {"s_per_iter": result["s_per_iter"], "per_iteration": result["per_iteration"],
            "precision": "fp32", "threads": result["threads"]}


def plain_vgg19(dtype, memory_format):
    """VGG19's trunk up to relu5_1 in plain torch, nstyle's weights; returns (model, names)."""
    import torch
    from torch import nn

    from nstyle.core.targets import cached_weights
    from nstyle.core.vgg import LAYER_NAMES, layer_channels

    weights = cached_weights()
    modules, names, c_in = [], [], 3
    for name in LAYER_NAMES[: LAYER_NAMES.index("relu5_1") + 1]:
        if name.startswith("conv"):
            conv = nn.Conv2d(c_in, layer_channels(name), 3, padding=1)
            conv.weight.data.copy_(weights[f"{name}.weight"])
            conv.bias.data.copy_(weights[f"{name}.bias"])
            c_in = layer_channels(name)
            modules.append(conv)
        elif name.startswith("relu"):
            modules.append(nn.ReLU(inplace=True))
        else:
            modules.append(nn.AvgPool2d(2, 2))
        names.append(name)
    model = nn.Sequential(*modules).to(dtype).to(memory_format=memory_format).requires_grad_(False)
    return model, names


def work_floor(job: dict) -> dict:
    """Forward + input gradient of a plain-torch VGG19 (the least any Gatys tool does per
    iteration), in both layouts; the faster layout's median."""
    import torch

    from nstyle.core.vgg import preprocess
    from nstyle.io.images import load_image, to_tensor

    dtype = torch.bfloat16 if job["precision"] == "bf16" else torch.float32
    image = preprocess(to_tensor(load_image(job["content"])))
    out = {}
    for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        model, names = plain_vgg19(dtype, fmt)
        wanted = set(FLOOR_LAYERS)
        x = image.to(dtype).contiguous(memory_format=fmt).requires_grad_(True)

        def step():
            x.grad = None
            h, loss = x, 0.0
            for name, module in zip(names, model):
                h = module(h)
                if name in wanted:
                    # the in-place ReLU after it would change a kept conv output; relu
                    # outputs are what the loss reads, and nothing writes them later
                    loss = loss + h.float().pow(2).mean()
            loss.backward()

        times = []
        for i in range(job["warmup"] + job["iterations"]):
            t = time.perf_counter()
            step()
            if i >= job["warmup"]:
                times.append(time.perf_counter() - t)
        out[layout] = statistics.median(times)
    best = min(out, key=out.get)
    return {"s_per_iter": out[best], "layout": best, "layouts": out, "precision": job["precision"],
            "threads": torch.get_num_threads()}


def work_pair(job: dict) -> dict:
    """One default run (with the schedule's options) on one pair."""
    import nstyle

    t = time.perf_counter()
    result = nstyle.run(job["content"], job["style"], size=job["size"], precision=job["precision"],
                        **job["options"])
    wall = time.perf_counter() - t
    if job.get("picture"):  # after the clock: encoding is not the run's time
        result.to_pil().save(job["picture"])
    return {"wall_s": wall, "iterations": result.iterations, "precision": result.precision,
            "scales": [[s["size"], s.get("iterations_run"), s["iterations"]] for s in result.plan["scales"]],
            "per_scale_s": {k: v for k, v in result.timings.items() if k.startswith(("optimize_", "targets_"))}}


def work_video(job: dict) -> dict:
    import video as bench_video

    from nstyle.io.example import example_images
    from nstyle.io.images import to_tensor
    from nstyle.options.config import Config
    from nstyle.tasks.video import VideoOptions, VideoStylizer

    clip = bench_video.make_clip("pan", job["frames"], job["size"])
    _, style = example_images()
    config = Config.from_options(size=job["size"], seed=0, precision=job["precision"])
    options = VideoOptions(**job.get("options", {}))
    done = list(VideoStylizer(config, [to_tensor(style)], options).frames(clip))
    later = done[1:]
    return {"first_frame_s": done[0].seconds, "first_frame_iterations": done[0].result.iterations,
            "later_frame_s": statistics.mean(f.seconds for f in later),
            "later_frame_iterations": statistics.mean(f.result.iterations for f in later),
            "later_frames_s": [f.seconds for f in later],
            "temporal_error": statistics.mean(f.temporal_error for f in later),
            "options": options.to_dict()}


WORKERS = {"nstyle": work_nstyle, "pastiche": work_pastiche, "floor": work_floor,
           "pair": work_pair, "video": work_video}


def run_worker(kind: str, job: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


# ============================================================================ parts


def per_iteration(args, report: dict, tmp: Path) -> None:
    import benchmark

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    images = benchmark.prepare_images(args.content, args.style, sizes, tmp)
    for size in sizes:
        img = images[size]
        runs: dict[str, list[dict]] = {k: [] for k in args.kinds}
        for r in range(args.repeats):
            order = list(args.kinds[r % len(args.kinds):]) + list(args.kinds[:r % len(args.kinds)])
            for kind in order:
                tool, _, precision = kind.partition("-")
                job = {"size": size, "content": img["content"], "style": img["style"],
                       "iterations": args.iterations, "warmup": args.warmup, "precision": precision or "fp32"}
                print(f"per iteration {size} px {kind} ({r + 1}/{args.repeats}) ...", file=sys.stderr, flush=True)
                runs[kind].append(run_worker(tool, job))
        h, w = img["content_dims"]
        entry = {"dims": [h, w], "runs": runs,
                 "s_per_iter": {k: statistics.median(x["s_per_iter"] for x in rs) for k, rs in runs.items()}}
        report["per_iteration"][str(size)] = entry
        save(report, args)


def pairs(args, report: dict) -> None:
    import quality

    chosen = quality.default_pairs(args.pairs)
    schedules = [parse_schedule(s) for s in args.schedule] or [("default", {})]
    for name, options in schedules:
        for precision in args.pair_precisions:
            key = f"{name}-{precision}"
            rows = report["pairs"].setdefault(key, {"options": options, "runs": {}})
            for content, style in chosen:
                print(f"pair {content} x {style}, {key} ...", file=sys.stderr, flush=True)
                picture = None
                if args.save_pictures:
                    args.save_pictures.mkdir(parents=True, exist_ok=True)
                    picture = str(args.save_pictures / f"{key}__{content}__{style}.png")
                rows["runs"][f"{content}__{style}"] = run_worker("pair", {
                    "content": str(args.images / f"{content}.jpg"), "style": str(args.images / f"{style}.jpg"),
                    "size": args.pair_size, "precision": precision, "options": options, "picture": picture})
                save(report, args)
            walls = [r["wall_s"] for r in rows["runs"].values()]
            rows["mean_wall_s"], rows["min_wall_s"], rows["max_wall_s"] = statistics.mean(walls), min(walls), max(walls)
            save(report, args)


def video(args, report: dict) -> None:
    for precision in args.video_precisions:
        print(f"video {args.video_frames} frames at {args.video_size} px, {precision} ...", file=sys.stderr, flush=True)
        report["video"][precision] = run_worker("video", {"frames": args.video_frames, "size": args.video_size,
                                                          "precision": precision})
        save(report, args)


def parse_schedule(text: str) -> tuple[str, dict]:
    """'NAME:JSON' -> (name, options), e.g. 'fast:{"scales": [128, 256, 512]}'."""
    name, _, options = text.partition(":")
    return name, json.loads(options) if options else {}


def save(report: dict, args) -> None:
    args.json.write_text(json.dumps(report, indent=1))


def table(report: dict) -> str:
    lines = [f"machine: {report['machine']}", ""]
    if report["per_iteration"]:
        kinds = list(next(iter(report["per_iteration"].values()))["s_per_iter"])
        lines.append("| size | " + " | ".join(f"{k} s/it" for k in kinds) + " | nstyle-fp32 / floor-fp32 "
                     "| nstyle-bf16 / floor-bf16 | pastiche / nstyle-fp32 |")
        lines.append("|---" * (len(kinds) + 4) + "|")
        for size, e in report["per_iteration"].items():
            s = e["s_per_iter"]
            ratio = lambda a, b: f"{s[a] / s[b]:.2f}x" if a in s and b in s else "-"  # noqa: E731
            lines.append(f"| {e['dims'][1]}x{e['dims'][0]} | " + " | ".join(f"{s[k]:.3f}" for k in kinds)
                         + f" | {ratio('nstyle-fp32', 'floor-fp32')} | {ratio('nstyle-bf16', 'floor-bf16')} "
                         f"| {ratio('pastiche', 'nstyle-fp32')} |")
        lines.append("")
    for key, rows in report["pairs"].items():
        if "mean_wall_s" not in rows:
            continue
        lines.append(f"{key} ({rows['options'] or 'defaults'}): mean {rows['mean_wall_s']:.1f} s "
                     f"(min {rows['min_wall_s']:.1f}, max {rows['max_wall_s']:.1f})")
        for pair, r in rows["runs"].items():
            scales = ", ".join(f"{s} px {ran}/{planned}" for s, ran, planned in r["scales"])
            lines.append(f"    {pair}: {r['wall_s']:.1f} s ({scales})")
    for precision, v in report["video"].items():
        lines.append(f"video {precision}: first frame {v['first_frame_s']:.1f} s ({v['first_frame_iterations']} it), "
                     f"later frames {v['later_frame_s']:.1f} s ({v['later_frame_iterations']:.0f} it), "
                     f"consistency {v['temporal_error']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--content", default=str(IMAGES / "tubingen.jpg"), help="the per-iteration part's photo")
    p.add_argument("--style", default=str(IMAGES / "starry_night.jpg"), help="the per-iteration part's painting")
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"per-iteration kinds (of {', '.join(KINDS)})")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--images", type=Path, default=IMAGES)
    p.add_argument("--pairs", type=int, default=6, help="shared pairs for the default run (0: skip)")
    p.add_argument("--pair-size", type=int, default=512)
    p.add_argument("--pair-precisions", default="fp32,bf16")
    p.add_argument("--schedule", action="append", default=[], metavar="NAME:JSON",
                   help="options of a run on the pairs (repeatable; default: one named 'default', no options)")
    p.add_argument("--save-pictures", type=Path, metavar="DIR",
                   help="save each default run's picture there (to look at what was timed)")
    p.add_argument("--video-frames", type=int, default=3, help="frames of the video part (0: skip)")
    p.add_argument("--video-size", type=int, default=256)
    p.add_argument("--video-precisions", default="fp32,bf16")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--tag", default="")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, job = args.worker
        print(MARK + json.dumps(WORKERS[kind](json.loads(job))), flush=True)
        return 0
    import tempfile

    import benchmark

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see the docstring
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.pair_precisions = [k for k in args.pair_precisions.split(",") if k]
    args.video_precisions = [k for k in args.video_precisions.split(",") if k]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    args.json = args.out / f"speed-{stamp}{'-' + args.tag if args.tag else ''}.json"
    report = {"started": stamp, "argv": sys.argv[1:], "machine": benchmark.machine_info(),
              "environment": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ},
              "load_average_start": load_average(), "per_iteration": {}, "pairs": {}, "video": {}}
    report["machine"]["python"] = platform.python_version()
    with tempfile.TemporaryDirectory(prefix="nstyle-speed-") as tmp:
        if args.sizes:
            per_iteration(args, report, Path(tmp))
    if args.pairs:
        pairs(args, report)
    if args.video_frames:
        video(args, report)
    report["load_average_end"] = load_average()
    report["finished"] = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    save(report, args)
    print(table(report))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
