#!/usr/bin/env python
"""Does the look depend on the output size? (issue 25, item 4). Not a test; heavy at 512 px.

    flock /work/notes/heavy.lock .venv/bin/python bench/balance.py \\
        --content ../shared/images/tubingen.jpg --style ../shared/images/starry_night.jpg \\
        --sizes 128,512 --balance 512,0 --out bench/results/balance-<date>

Stylizes one pair at each size, once per ``balance_size`` (0: the behaviour before, the
weights defined at each run's own output size), with the defaults otherwise, and prints
``structure_kept`` (nstyle.io.metrics: SSIM of the luminances of output and photo, both
seen at the smallest size's pixels) for each. A balance independent of the size keeps
comparable figures across sizes. At 512 px (the default reference) both balances are the
same run, so it is made once. Writes each PNG and a JSON of the figures to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from PIL import Image

from nstyle.core.stylizer import Stylizer
from nstyle.io.images import to_pil, to_tensor
from nstyle.io.metrics import structure_kept
from nstyle.options.config import Config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--content", required=True)
    p.add_argument("--style", required=True)
    p.add_argument("--sizes", default="128,512")
    p.add_argument("--balance", default="512,0", help="balance_size values (0: per output size)")
    p.add_argument("--out", required=True)
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="any other option, e.g. iterations=30")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    content_pil = Image.open(args.content).convert("RGB")
    content, style = to_tensor(content_pil), to_tensor(Image.open(args.style).convert("RGB"))
    sizes = [int(s) for s in args.sizes.split(",")]
    extra = dict(o.split("=", 1) for o in args.option)
    rows, done = [], {}
    for size in sizes:
        for balance in (int(b) for b in args.balance.split(",")):
            effective = balance or size  # 0 weighs a run as if its own size were the reference
            key = (size, effective)
            name = f"{Path(args.content).stem}-{Path(args.style).stem}-{size}-balance{balance}.png"
            if key in done:
                rows.append({**done[key], "balance_size": balance, "same_run_as": done[key]["file"]})
                continue
            config = Config.from_options(size=size, balance_size=balance, device="cpu", **extra)
            t = time.perf_counter()
            result = Stylizer(config).run(content, [style])
            image = to_pil(result.image)
            image.save(out / name)
            row = {"size": size, "balance_size": balance, "file": name,
                   "seconds": round(time.perf_counter() - t, 1), "load_average": os.getloadavg()[0],
                   "structure_kept": round(structure_kept(image, content_pil, min(sizes)), 4)}
            done[key] = row
            rows.append(row)
            print(f"{size:5d} px  balance_size {balance:4d}  structure_kept {row['structure_kept']:.3f}"
                  f"  ({row['seconds']} s)", flush=True)
    (out / "balance.json").write_text(json.dumps({"content": args.content, "style": args.style,
                                                  "options": extra, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
