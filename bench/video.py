#!/usr/bin/env python
"""Video: how much the output flickers, and seconds per frame. Not a test.

    .venv/bin/python bench/video.py                         # pan + zoom, 256 px, (a) (b) (c), speed at 256 and 512
    .venv/bin/python bench/video.py --clips pan --frames 6 --weights 0,1e4,1e5 --no-speed   # calibrate

Clips are made here from scikit-image's cat photo (what 'nstyle example' uses): a pan (a
window sliding across the photo) and a zoom (a window shrinking towards its centre), each
--frames frames at --size px; the style is the shipped Starry Night. No package here
ships a real clip worth stylizing (scikit-image's only one is a 14x25 px GIF).

Modes, all from the same first frame (computed once: it is the same still-image run):
  (a) independent   every frame a still image (--iterations each)
  (b) warped        each later frame starts from the previous output warped by the flow
                    (--frame-iterations), no temporal loss
  (c) temporal      (b) plus the temporal loss at each --weights value

The temporal-consistency figure is the mean absolute difference between each output
frame and the previous output warped to it by the flow of the content frames, on the
pixels where that flow is trusted (0..255 levels; the content frames' own figure is
the floor: warping itself is not exact). Seconds per frame: the first frame and the mean
of the later ones, from the (c) runs at --size and a short --speed-frames run at 512 px.
Timings are wall-clock on a machine that may be shared (the load average is recorded).
Writes JSON, PNG strips of every mode's frames, and a side-by-side GIF of (a) and (c).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nstyle.core import flow  # noqa: E402
from nstyle.options.config import Config  # noqa: E402
from nstyle.io.example import example_images  # noqa: E402
from nstyle.io.images import to_tensor  # noqa: E402
from nstyle.tasks.video import VideoOptions, VideoStylizer  # noqa: E402
from quality import parse_variant  # noqa: E402


def make_clip(kind: str, frames: int, size: int) -> list[Image.Image]:
    """A pan or a zoom over the cat photo, ``frames`` frames whose longest side is ``size``."""
    photo, _ = example_images()  # 451 x 300
    w, h = photo.size
    out = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        if kind == "pan":  # a 4:3 window sliding left to right over 60 % of the width
            ch = h
            cw = round(ch * 4 / 3)
            x0 = t * (w - cw)
            box = (x0, 0, x0 + cw, ch)
        else:  # zoom in towards the cat's face, to 60 % of the height
            ch = h * (1 - 0.4 * t)
            cw = ch * 4 / 3
            cx, cy = w * 0.45, h * 0.45
            x0 = min(max(cx - cw / 2, 0), w - cw)
            y0 = min(max(cy - ch / 2, 0), h - ch)
            box = (x0, y0, x0 + cw, y0 + ch)
        out.append(photo.resize((size, round(size * 3 / 4)), Image.Resampling.LANCZOS, box=box))
    return out


def content_floor(frames: list[Image.Image], method: str) -> float:
    """The consistency figure of the content frames themselves (the warp's own error)."""
    errors = []
    for a, b in zip(frames, frames[1:]):
        fl = flow.frame_flow(np.asarray(a), np.asarray(b), method)
        errors.append(flow.temporal_error(np.asarray(a), np.asarray(b), fl))
    return statistics.mean(errors)


def run_mode(config: Config, style, frames, options: VideoOptions, first) -> dict:
    """Every frame after the first, from the shared first frame ``first``."""
    stylizer = VideoStylizer(config, [to_tensor(style)], options)
    done = list(stylizer.frames(frames, start=1, previous=first.image))
    later = [f.seconds for f in done]
    return {"options": options.to_dict(),
            "temporal_error": statistics.mean(f.temporal_error for f in done),
            "temporal_error_per_frame": [round(f.temporal_error, 3) for f in done],
            "trusted": statistics.mean(f.trusted for f in done),
            "iterations_per_frame": statistics.mean(f.result.iterations for f in done),
            "seconds_per_later_frame": statistics.mean(later),
            "losses_last_frame": {k: float(f"{v:.4g}") for k, v in done[-1].result.losses.items()},
            "images": [first.image] + [f.image for f in done]}


def strip(images: list[Image.Image], every: int = 1) -> Image.Image:
    chosen = images[::every]
    w, h = chosen[0].size
    out = Image.new("RGB", (w * len(chosen), h))
    for i, im in enumerate(chosen):
        out.paste(im, (i * w, 0))
    return out


def side_by_side_gif(left: list[Image.Image], right: list[Image.Image], labels: tuple[str, str],
                     path: Path, fps: float, width: int) -> None:
    frames = []
    for a, b in zip(left, right):
        w, h = a.size
        scale = width / (2 * w)
        a, b = (im.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS) for im in (a, b))
        canvas = Image.new("RGB", (a.width * 2 + 4, a.height + 16), "white")
        canvas.paste(a, (0, 16))
        canvas.paste(b, (a.width + 4, 16))
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 2), labels[0], fill="black")
        draw.text((a.width + 8, 2), labels[1], fill="black")
        frames.append(canvas)
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:],
                   duration=max(20, round(100 / fps) * 10), loop=0, optimize=True)


def speed(size: int, frames: int, args, style) -> dict:
    """Seconds of the first frame and of the later ones at ``size`` (defaults otherwise)."""
    clip = make_clip("pan", frames, size)
    config = Config.from_options(size=size, seed=0, iterations=args.speed_first_iterations)
    options = VideoOptions(temporal_weight=args.weight, frame_iterations=args.speed_frame_iterations,
                           whole_frame_style=args.whole_frame_style)
    stylizer = VideoStylizer(config, [to_tensor(style)], options)
    done = list(stylizer.frames(clip))
    return {"size": size, "frames": frames, "first_frame_seconds": round(done[0].seconds, 2),
            "first_frame_iterations": done[0].result.iterations,
            "later_frame_seconds": round(statistics.mean(f.seconds for f in done[1:]), 2),
            "later_frame_iterations": statistics.mean(f.result.iterations for f in done[1:]),
            "seconds_per_iteration_later": round(statistics.mean(
                f.seconds / f.result.iterations for f in done[1:]), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", default="pan,zoom")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--fps", type=float, default=8.0, help="of the clips (only the GIF's speed)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--iterations", type=int, default=100, help="the first frame's, and (a)'s per frame")
    p.add_argument("--frame-iterations", type=int, default=VideoOptions().frame_iterations)
    p.add_argument("--weights", default=str(VideoOptions().temporal_weight),
                   help="temporal weights of (c), comma-separated")
    p.add_argument("--flow", default="dis")
    p.add_argument("--no-independent", action="store_true", help="skip (a)")
    p.add_argument("--no-warped", action="store_true", help="skip (b)")
    p.add_argument("--whole-frame-style", action="store_true",
                   help="later frames match the style over the whole frame only (the former way)")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--speed-frames", type=int, default=3, help="frames of the 512 px speed run")
    p.add_argument("--speed-frame-iterations", type=int, default=VideoOptions().frame_iterations)
    p.add_argument("--speed-first-iterations", type=int, default=100,
                   help="the first frame's --iterations in the speed runs (512 px: half as many again at 512)")
    p.add_argument("--gif", default=None, help="side-by-side GIF of (a) and (c) for the first clip")
    p.add_argument("--out", default=None)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an nstyle option for every run (a JSON value, or as the command line "
                   "spells it: coarse_only_layers=), repeatable")
    args = p.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    args.weight = weights[-1]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or HERE / "results" / f"video-{stamp}")
    out.mkdir(parents=True, exist_ok=True)
    _, style = example_images()
    extra = parse_variant(["options", *args.option])[1]  # JSON values, else text Config parses
    config = Config.from_options(size=args.size, iterations=args.iterations, seed=0, **extra)
    report = {"created": stamp, "machine": {"cpu": platform.processor() or platform.machine(),
                                            "cores": os.cpu_count(), "load_before": os.getloadavg()},
              "args": vars(args), "clips": {}}
    rows = []
    for kind in [c for c in args.clips.split(",") if c]:
        frames = make_clip(kind, args.frames, args.size)
        strip(frames, every=max(1, args.frames // 8)).save(out / f"{kind}-content.jpg", quality=90)
        first = next(VideoStylizer(config, [to_tensor(style)]).frames(frames[:1]))
        entry = {"frames": len(frames), "content_floor": content_floor(frames, args.flow),
                 "first_frame_seconds": first.seconds, "modes": {}}
        modes = [] if args.no_independent else [("a independent", VideoOptions(independent=True, flow=args.flow))]
        later = dict(flow=args.flow, whole_frame_style=args.whole_frame_style,
                     frame_iterations=args.frame_iterations)  # (b) and (c) differ by the weight only
        if not args.no_warped:
            modes.append(("b warped", VideoOptions(temporal_weight=0.0, **later)))
        modes += [(f"c temporal {w:g}", VideoOptions(temporal_weight=w, **later)) for w in weights]
        for name, options in modes:
            t = time.perf_counter()
            result = run_mode(config, style, frames, options, first)
            images = result.pop("images")
            strip(images, every=max(1, args.frames // 8)).save(out / f"{kind}-{name.replace(' ', '-')}.jpg", quality=90)
            entry["modes"][name] = result
            rows.append((kind, name, result["temporal_error"], entry["content_floor"], result["trusted"],
                         result["iterations_per_frame"], result["seconds_per_later_frame"]))
            print(f"{kind:5s} {name:22s} error {result['temporal_error']:6.2f} (floor "
                  f"{entry['content_floor']:.2f})  trusted {result['trusted']:.2f}  "
                  f"{result['iterations_per_frame']:5.1f} it  {result['seconds_per_later_frame']:6.1f} s/frame "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)
            if args.gif and kind == args.clips.split(",")[0]:
                if name.startswith("a "):
                    independent_images = images
                elif name.startswith("c ") and not args.no_independent and options.temporal_weight == args.weight:
                    side_by_side_gif(independent_images, images, ("(a) independent", "(c) warped + temporal"),
                                     Path(args.gif), args.fps, width=2 * args.size)
        report["clips"][kind] = entry
    if not args.no_speed:
        report["speed"] = [speed(args.size, args.speed_frames + 1, args, style), speed(512, args.speed_frames, args, style)]
        for s in report["speed"]:
            print(f"speed {s['size']} px: first frame {s['first_frame_seconds']} s ({s['first_frame_iterations']} it), "
                  f"later frames {s['later_frame_seconds']} s ({s['later_frame_iterations']} it, "
                  f"{s['seconds_per_iteration_later']} s/it)", flush=True)
    report["machine"]["load_after"] = os.getloadavg()
    (out / "video.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}/video.json")


if __name__ == "__main__":
    main()
