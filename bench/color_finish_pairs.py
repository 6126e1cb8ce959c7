#!/usr/bin/env python
"""The OkLab colour finish applied to finished outputs, for blind judging (issue 25). Not a test.

    .venv/bin/python bench/color_finish_pairs.py --outputs DIR --images ../shared/images --out DIR2

DIR holds outputs named CONTENT__STYLE.png (e.g. bench/quality.py's default run); for each,
DIR2/CONTENT__STYLE.png is the same image with ``--color-finish oklab``'s last step
(``nstyle.core.stylizer.finish_colors``): a run with ``color_finish=oklab`` gives exactly
this image from the same optimisation (tests/core/test_color_finish.py checks it), so the
finish is judged on the very pictures it is compared with. Prints the command that
makes the blind sheets with ../shared/tools/blind_sheet.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from nstyle.core.stylizer import finish_colors
from nstyle.io.images import to_pil, to_tensor
from nstyle.options.config import Config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outputs", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sheet_args = []
    for made in sorted(args.outputs.glob("*__*.png")):
        content_name, style_name = made.stem.split("__")
        content_path, style_path = args.images / f"{content_name}.jpg", args.images / f"{style_name}.jpg"
        output = to_tensor(Image.open(made).convert("RGB"))
        config = Config.from_options(size=max(output.shape[-2:]), color_finish="oklab")
        finished = finish_colors(config, output, to_tensor(Image.open(content_path).convert("RGB")),
                                 [to_tensor(Image.open(style_path).convert("RGB"))])
        target = args.out / made.name
        to_pil(finished).save(target)
        print(f"{made.name}: finished -> {target}")
        sheet_args += [str(content_path), str(style_path), str(target), str(made)]
    print("sheets (A = with the finish):\n  python3 ../shared/tools/blind_sheet.py OUTDIR " + " ".join(sheet_args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
