"""Points of the quality-against-time curve from one run per pair: snapshots of the last scale.

    .venv/bin/python bench/schedule_curve.py --out /tmp/curve --precision fp32 \\
        --snapshots 20,30,40 [--option scale_iterations=[100,100] --option tolerance=0]

A run's trajectory does not depend on how many iterations its last scale was planned to
have (L-BFGS keeps its history whatever the plan), so the image after k iterations of the
last scale of a run *is* the output of the schedule "the same earlier scales, k
iterations at the last". One run per pair with a long last scale thus gives the default's
picture (k = 50), the cheaper schedules' below it and a dearer one's (the run's end), with the wall time each would have taken
(the time of its snapshot, plus the final loss pass, which every schedule pays once).

For each pair (bench/quality.py's six by default) it writes OUT/last{k}/PAIR.png for every
snapshot k the run reached, OUT/final/PAIR.png (the run's own output; a run that settled
before snapshot k ended where the schedule with k would have) and
OUT/curve.json: per pair the wall time, the iterations per scale, the seconds at each
snapshot, and the mean absolute pixel change (0..255 levels) of every last-scale iteration
(what --tolerance reads). Build blind sheets from two of the folders with
../shared/tools/blind_sheet.py. Run it on a quiet machine: the times are the point.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import nstyle  # noqa: E402
from nstyle.io.images import to_pil  # noqa: E402
from benchmark import machine_info  # noqa: E402
from quality import DEFAULT_IMAGES, default_pairs, parse_variant  # noqa: E402


def run_pair(content: Path, style: Path, options: dict, snapshots: set[int], out: Path,
             name: str) -> dict:
    record: dict = {"snapshots": {}, "changes": []}
    previous = None  # the last-scale image of the iteration before
    start = None  # the run's iteration count when the last scale began

    def callback(p) -> None:
        nonlocal previous, start
        if p.scale != p.scales:
            return
        if start is None:
            start = p.iteration - 1
        k = p.iteration - start
        image = p.rendered().detach().float().cpu()
        if previous is not None:
            record["changes"].append(round(float((image - previous).abs().mean()) * 255, 3))
        previous = image
        if k in snapshots:
            folder = out / f"last{k}"
            folder.mkdir(parents=True, exist_ok=True)
            to_pil(image).save(folder / f"{name}.png")
            record["snapshots"][k] = round(p.elapsed, 1)

    t = time.perf_counter()
    result = nstyle.run(str(content), str(style), callback=callback, **options)
    record["seconds"] = round(time.perf_counter() - t, 1)
    record["iterations"] = [(s["size"], s.get("iterations_run")) for s in result.plan["scales"]]
    (out / "final").mkdir(parents=True, exist_ok=True)
    result.to_pil().save(out / "final" / f"{name}.png")
    return record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--snapshots", default="20,30,40",
                    help="last-scale iterations to save, comma-separated")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="an nstyle option for every run (JSON values), repeatable")
    args = ap.parse_args()
    options = {"size": args.size, "precision": args.precision,
               **parse_variant(["x", *args.option])[1]}
    snapshots = {int(s) for s in args.snapshots.split(",") if s}
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"machine": machine_info(), "options": options, "pairs": {}}
    for photo, painting in default_pairs(args.pairs):
        name = f"{photo}__{painting}"
        content = next(args.images.glob(f"{photo}.*"))
        style = next(args.images.glob(f"{painting}.*"))
        record = run_pair(content, style, options, snapshots, args.out, name)
        summary["pairs"][name] = record
        print(f"{name}: {record['seconds']} s, iterations {record['iterations']}, "
              f"snapshots {record['snapshots']}", flush=True)
        (args.out / "curve.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
