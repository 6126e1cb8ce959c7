"""Blind side-by-side quality sheets: nstyle against pastiche (and against other nstyle settings).

    .venv/bin/python bench/quality.py                          # nstyle's defaults, six pairs, 512 px
    .venv/bin/python bench/quality.py --variant avg pooling=avg --variant base \\
        --against base                                         # an ablation: one change, judged blind
    .venv/bin/python bench/quality.py --against pastiche-same-time --pastiche-steps 60

For each content x style pair (default: the three photos of ../shared/images against its
four paintings in rotation, six pairs nobody picked for the result) it

1. stylizes with each ``--variant`` of nstyle's options (the first is the candidate),
   timing the whole call;
2. runs pastiche (the PyPI package; its own defaults, ``--size`` px, ``--pastiche-steps``
   L-BFGS steps) with a snapshot every 5 steps, so the same run gives both baselines:
   ``pastiche500`` (its last step) and ``pastiche-same-time`` (its last snapshot taken
   within the candidate's wall time, pastiche's start-up excluded). Finished pastiche runs
   are kept in OUT/pastiche and reused, so an interrupted bench resumes;
3. writes blind sheets per baseline in ``--against``: content and style on top, the
   candidate and the baseline below as X and Y in random order, no names; the key goes to
   OUT/sheets-BASELINE/key.json, which the judge never sees (../shared/JUDGING.md);
4. prints and saves (OUT/quality.json) proxies per image: chroma speckle relative to the
   painting's own grain, edge-band detail ratio and luminance step (nstyle.io.metrics), the
   paper's loss (alpha L_c + beta L_s with the paper's equal layer weights, alpha = 1,
   beta = 1e4, the same evaluator for every tool) and wall time.

Judges decide; the proxies only explain. Timings are wall clock on whatever else the
machine is doing: run it on a quiet machine when the times matter.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nstyle  # noqa: E402
from nstyle.core.losses.gram import gram, style_loss
from nstyle.core.losses.terms import content_loss
from nstyle.io import metrics
from nstyle.io.images import fit_size, load_image, to_tensor  # noqa: E402
from nstyle.core.vgg import VGG19Features, preprocess  # noqa: E402

DEFAULT_IMAGES = ROOT.parent / "shared" / "images"
PHOTOS = ("tubingen", "golden_gate", "hoovertowernight")
PAINTINGS = ("starry_night", "the_scream", "shipwreck", "composition_vii")
SNAPSHOT_EVERY = 5
PASTICHE_BASELINES = ("pastiche500", "pastiche-same-time")

#: the paper's objective, one evaluator for every tool's image
PAPER_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
PAPER_ALPHA, PAPER_BETA = 1.0, 1e4


def default_pairs(n: int = 6) -> list[tuple[str, str]]:
    """Photo i % 3 with painting i % 4: every photo twice, every painting at least once."""
    return [(PHOTOS[i % len(PHOTOS)], PAINTINGS[i % len(PAINTINGS)]) for i in range(n)]


def parse_variant(words: list[str]) -> tuple[str, dict]:
    """``NAME key=value ...`` -> (name, options); values are parsed as JSON when they can be."""
    name, options = words[0], {}
    for word in words[1:]:
        key, _, value = word.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options


# --------------------------------------------------------------------------- runs


def run_nstyle(content: Path, style: Path, size: int, options: dict, out: Path) -> dict:
    if out.exists() and out.with_suffix(".json").exists():
        return json.loads(out.with_suffix(".json").read_text())
    t = time.perf_counter()
    result = nstyle.run(str(content), str(style), size=size, **options)
    seconds = time.perf_counter() - t
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_pil().save(out)
    # --method nnst has no plan of Gram scales (its own schedule is fixed: core/nnst.py)
    scales = result.plan["scales"] if result.plan else []
    info = {"seconds": seconds, "iterations": result.iterations, "device": result.device,
            "scales": [(p["size"], p.get("iterations_run")) for p in scales]}
    out.with_suffix(".json").write_text(json.dumps(info))
    return info


def run_pastiche(content: Path, style: Path, size: int, steps: int, folder: Path, threads: int) -> dict:
    """pastiche's CLI with a snapshot every 5 steps; returns {step: seconds since step 0}."""
    final, log = folder / f"final{steps}.png", folder / f"log{steps}.txt"
    if not final.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"tmp{steps}.png"
        cmd = [sys.executable, "-m", "pastiche", "--content", str(content), "--styles", str(style),
               "--output", str(tmp), "--size", str(size), "--num-steps", str(steps),
               "--info-step", str(SNAPSHOT_EVERY), "--seed", "0",
               "--workspace", str(folder / f"steps{steps}"), "--workspace-step", str(SNAPSHOT_EVERY)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
        with open(log, "w") as f:
            subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, env=env)
        tmp.replace(final)
    elapsed = {}
    for line in log.read_text().splitlines():
        m = re.match(r"^(\d+)\s+([\d.]+)\s+[\d.]+", line)
        if m:
            elapsed[int(m.group(1))] = float(m.group(2))
    start = elapsed.get(0, 0.0)
    return {step: t - start for step, t in elapsed.items()}


def pastiche_at(folder: Path, steps: int, elapsed: dict, seconds: float, step: int = 0) -> tuple[Path, int]:
    """The last snapshot pastiche had made within ``seconds`` (at least its first step), or
    the snapshot at ``step`` when one is given."""
    if not step:
        within = [s for s, t in elapsed.items() if t <= seconds and s > 0] or [SNAPSHOT_EVERY]
        step = max(within)
    width = len(str(steps))
    return folder / f"steps{steps}" / f"{step:0{width}d}.png", step


# --------------------------------------------------------------------------- measures


class PaperLoss:
    """alpha L_c + beta L_s of the paper (equal layer weights) for any image at its size."""

    def __init__(self) -> None:
        # float32 on the GPU where there is one (cuDNN's default TF32 convolutions move
        # the figure by about 1e-3, far less than the differences between images)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.vgg = VGG19Features("relu5_1", "max", padding="zeros").to(self.device)

    @torch.no_grad()
    def features(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.vgg(preprocess(rgb.to(self.device)), ("relu4_2",) + PAPER_STYLE_LAYERS)

    @torch.no_grad()
    def __call__(self, image: Path, content: Path, style: Path) -> float:
        img = to_tensor(Image.open(image).convert("RGB"))
        h, w = img.shape[-2:]
        ref = to_tensor(load_image(str(content)).resize((w, h), Image.Resampling.LANCZOS))
        sty_img = load_image(str(style))
        sty = to_tensor(sty_img.resize(fit_size(sty_img.width, sty_img.height, max(h, w)),
                                       Image.Resampling.LANCZOS))
        f, c, s = self.features(img), self.features(ref), self.features(sty)
        content = content_loss(f["relu4_2"], c["relu4_2"])
        style = sum(style_loss(f[l], gram(s[l])) / len(PAPER_STYLE_LAYERS)
                    for l in PAPER_STYLE_LAYERS)
        return float(PAPER_ALPHA * content + PAPER_BETA * style)


def proxies(image: Path, content: Path, style: Path, paper: PaperLoss) -> dict:
    img = Image.open(image).convert("RGB")
    bands = metrics.edge_bands(img)
    return {"chroma_speckle": metrics.chroma_speckle(img, Image.open(style)),
            "edge_detail_ratio": bands["detail_ratio"], "edge_luma_step": bands["luma_step"],
            "paper_loss": paper(image, content, style)}


# --------------------------------------------------------------------------- sheets


def fit_height(im: Image.Image, h: int) -> Image.Image:
    """``im`` as RGB, resized to height ``h`` with its aspect ratio."""
    im = im.convert("RGB")
    return im.resize((max(1, round(im.width * h / im.height)), h), Image.Resampling.LANCZOS)


def sheet(content: Path, style: Path, x: Path, y: Path, h: int = 384) -> Image.Image:
    """Content and style on top, X and Y below at the same height, labelled only X and Y."""
    top = [fit_height(Image.open(p), h // 2) for p in (content, style)]
    bottom = [fit_height(Image.open(p), h) for p in (x, y)]
    w = max(sum(i.width for i in top), sum(i.width for i in bottom)) + 10
    out = Image.new("RGB", (w, h // 2 + h + 40), "white")
    draw = ImageDraw.Draw(out)
    left = 0
    for im in top:
        out.paste(im, (left, 0))
        left += im.width + 10
    left, row = 0, h // 2 + 30
    for label, im in zip("XY", bottom):
        draw.text((left + 4, row - 14), label, fill="black")
        out.paste(im, (left, row))
        left += im.width + 10
    return out


def write_sheets(folder: Path, rows: list[dict], candidate: str, baseline: str) -> None:
    """pairN.png per pair plus key.json (kept apart: the judge gets only the PNGs)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, key = random.SystemRandom(), {}
    for n, row in enumerate(rows):
        a, b = row["images"][candidate], row["images"][baseline]
        swap = rng.random() < 0.5
        x, y = (b, a) if swap else (a, b)
        sheet(row["content"], row["style"], Path(x), Path(y)).save(folder / f"pair{n}.png")
        key[f"pair{n}"] = {"pair": row["pair"], "X": baseline if swap else candidate,
                           "Y": candidate if swap else baseline}
    (folder / "key.json").write_text(json.dumps(key, indent=1))


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder with the photos and paintings")
    p.add_argument("--pairs", default=None,
                   help="CONTENT:STYLE,... file stems in --images (default: six in rotation)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "KEY=VALUE"),
                   help="an nstyle setting: a name, then options (repeatable; the first is the "
                        "candidate; default: one named 'default' with no options)")
    p.add_argument("--against", default=",".join(PASTICHE_BASELINES),
                   help="baselines for the sheets: pastiche500, pastiche-same-time, or variant names")
    p.add_argument("--pastiche-steps", type=int, default=500)
    p.add_argument("--same-time-step", type=int, default=0,
                   help="use pastiche's snapshot at this step as pastiche-same-time instead of the one "
                        "within the candidate's wall time here (for outputs made on another machine, "
                        "e.g. a GPU, when the equal-time step was measured on this one)")
    p.add_argument("--threads", type=int, default=0, help="torch threads for both tools (0: torch's default)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / f"quality-{time.strftime('%Y%m%d-%H%M%S')}")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = dict(parse_variant(v) for v in (args.variant or [["default"]]))
    candidate = next(iter(variants))
    against = [a for a in args.against.split(",") if a]
    unknown = [a for a in against if a not in variants and a not in PASTICHE_BASELINES]
    if unknown:
        p.error(f"unknown baseline {unknown[0]!r}: use {', '.join(PASTICHE_BASELINES)} or a variant name")
    pairs = [tuple(s.split(":")) for s in args.pairs.split(",")] if args.pairs else default_pairs()
    paper, rows = PaperLoss(), []
    for content_stem, style_stem in pairs:
        content, style = args.images / f"{content_stem}.jpg", args.images / f"{style_stem}.jpg"
        pair = f"{content_stem}__{style_stem}"
        row = {"pair": pair, "content": str(content), "style": str(style), "images": {}, "seconds": {}}
        for name, options in variants.items():
            out = args.out / name / f"{pair}.png"
            info = run_nstyle(content, style, args.size, options, out)
            row["images"][name], row["seconds"][name] = str(out), info["seconds"]
            row.setdefault("runs", {})[name] = info
        if any(a in PASTICHE_BASELINES for a in against):
            folder = args.out / "pastiche" / pair
            elapsed = run_pastiche(content, style, args.size, args.pastiche_steps, folder, args.threads)
            row["images"]["pastiche500"] = str(folder / f"final{args.pastiche_steps}.png")
            row["seconds"]["pastiche500"] = max(elapsed.values())
            snap, step = pastiche_at(folder, args.pastiche_steps, elapsed, row["seconds"][candidate],
                                     args.same_time_step)
            row["images"]["pastiche-same-time"], row["pastiche_same_time_step"] = str(snap), step
            row["seconds"]["pastiche-same-time"] = elapsed.get(step, 0.0)
        row["proxies"] = {name: proxies(Path(path), content, style, paper)
                          for name, path in row["images"].items() if Path(path).exists()}
        rows.append(row)
        print(json.dumps({"pair": pair, "seconds": row["seconds"]}), flush=True)
    for baseline in against:
        write_sheets(args.out / f"sheets-{baseline}", [r for r in rows if Path(r["images"].get(baseline, "")).exists()],
                     candidate, baseline)
    (args.out / "quality.json").write_text(json.dumps(rows, indent=1))
    print_table(rows)
    print(f"sheets and quality.json in {args.out}")
    return 0


def print_table(rows: list[dict]) -> None:
    print("| pair | image | seconds | chroma speckle | edge detail | edge luma step | paper loss |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        for name, m in row["proxies"].items():
            print(f"| {row['pair']} | {name} | {row['seconds'].get(name, 0):.0f} | {m['chroma_speckle']:.2f} "
                  f"| {m['edge_detail_ratio']:.2f} | {m['edge_luma_step']:.3f} | {m['paper_loss']:.3g} |")


if __name__ == "__main__":
    raise SystemExit(main())
