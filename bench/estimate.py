"""How close the time estimate comes to real runs: the CLI as a user runs it, one size after
another, each estimate made from the figures of the runs before it.

    python bench/estimate.py CONTENT STYLE --sizes 128,256,384 [--out bench/results/estimate.json]

For each size it runs ``nstyle CONTENT STYLE -o OUT --size N`` (nstyle's defaults
otherwise), reads the estimate the CLI prints before the run ("... about 2 min on this
computer") as the exact seconds it prints after it ("..., 41.3 s (estimated 44 s), ..."),
and prints a table of estimate, measured run time and error. The machine's load average
is recorded beside each run: on a shared machine it moves both figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WROTE = re.compile(r"^wrote .*?, ([\d.]+) s \(estimated (\d+) s\)", re.M)


def run(content: str, style: str, size: int, workdir: Path) -> dict:
    out = workdir / f"estimate_{size}.png"
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nstyle", content, style, "-o", str(out),
                           "--size", str(size)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"size {size}: nstyle failed:\n{done.stderr}")
    found = WROTE.search(done.stderr)
    if not found:
        raise SystemExit(f"size {size}: no estimate in nstyle's output:\n{done.stderr}")
    measured, estimated = float(found[1]), float(found[2])
    said = next(line for line in done.stderr.splitlines() if "on this computer" in line)
    return {"size": size, "estimated_s": estimated, "run_s": measured, "wall_s": round(wall, 1),
            "error": round((estimated - measured) / measured, 3), "said": said,
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("content")
    p.add_argument("style")
    p.add_argument("--sizes", default="128,256,384")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            rows.append(run(args.content, args.style, size, Path(tmp)))
            r = rows[-1]
            print(f"{r['size']:>5} px  estimated {r['estimated_s']:>6.0f} s  run {r['run_s']:>6.1f} s  "
                  f"error {r['error']:+.0%}  (load {r['load_before']:.1f} -> {r['load_after']:.1f})", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
