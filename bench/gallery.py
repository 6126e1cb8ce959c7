"""One labelled grid per pair for docs/quality.md: content, style, nstyle, pastiche.

    .venv/bin/python bench/gallery.py OUT.jpg CONTENT STYLE NSTYLE.png "nstyle (label)" PASTICHE.png "pastiche (label)"
"""

from __future__ import annotations

import sys

from PIL import Image, ImageDraw

from quality import fit_height  # bench/ is the script's own folder, so on sys.path

HEIGHT = 300


def grid(content: str, style: str, results: list[tuple[str, str]]) -> Image.Image:
    """Top row: content and style at half height; below, each result with its label."""
    top = [fit_height(Image.open(content), HEIGHT // 2), fit_height(Image.open(style), HEIGHT // 2)]
    below = [(fit_height(Image.open(path), HEIGHT), label) for path, label in results]
    width = max(sum(i.width for i in top) + 10, sum(i.width for i, _ in below) + 10 * (len(below) - 1))
    out = Image.new("RGB", (width, HEIGHT // 2 + HEIGHT + 30), "white")
    draw = ImageDraw.Draw(out)
    out.paste(top[0], (0, 0))
    out.paste(top[1], (top[0].width + 10, 0))
    left = 0
    for im, label in below:
        draw.text((left + 2, HEIGHT // 2 + 6), label, fill="black")
        out.paste(im, (left, HEIGHT // 2 + 24))
        left += im.width + 10
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 5 or (len(argv) - 3) % 2:
        sys.exit(__doc__)
    out, content, style, rest = argv[0], argv[1], argv[2], argv[3:]
    grid(content, style, list(zip(rest[::2], rest[1::2]))).save(out, quality=85, optimize=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
