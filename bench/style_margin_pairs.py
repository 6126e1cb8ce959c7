#!/usr/bin/env python
"""The default run with and without --style-margin on the shared pairs, for blind judging
(issue 25, the coloured strips along an output's edges). Not a test.

    .venv/bin/python bench/style_margin_pairs.py --images ../shared/images --out DIR [--margin 0.04]

Writes DIR/margin-0/CONTENT__STYLE.png and DIR/margin-M/CONTENT__STYLE.png (each with a
.json of seconds and iterations) as ``nstyle.run(content, style, size=512)`` makes them
(bench/quality.py's default run), and prints the blind_sheet.py command (A = the margin).
A finished picture is kept: run it again to go on after a stop.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nstyle

PAIRS = [("golden_gate", "starry_night"), ("golden_gate", "the_scream"), ("hoovertowernight", "shipwreck"),
         ("hoovertowernight", "the_scream"), ("tubingen", "composition_vii"), ("tubingen", "starry_night")]


def make(content: Path, style: Path, out: Path, **options) -> None:
    if out.exists():
        return
    t = time.perf_counter()
    result = nstyle.run(str(content), str(style), size=512, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_pil().save(out)
    out.with_suffix(".json").write_text(json.dumps({"seconds": time.perf_counter() - t,
                                                    "iterations": result.iterations, "options": options}))
    print(f"{out}: {time.perf_counter() - t:.0f} s", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--margin", type=float, default=0.04)
    p.add_argument("--baseline", type=Path, default=None,
                   help="a folder that already holds the default run's pictures (made with the same code)")
    args = p.parse_args(argv)
    base = args.baseline or args.out / "margin-0"
    sheet_args = []
    for c, s in PAIRS:
        content, style = args.images / f"{c}.jpg", args.images / f"{s}.jpg"
        name = f"{c}__{s}.png"
        make(content, style, args.out / f"margin-{args.margin:g}" / name, style_margin=args.margin)
        make(content, style, base / name)
        sheet_args += [str(content), str(style), str(args.out / f"margin-{args.margin:g}" / name), str(base / name)]
    print("sheets (A = with the margin):\n  python3 ../shared/tools/blind_sheet.py OUTDIR " + " ".join(sheet_args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
