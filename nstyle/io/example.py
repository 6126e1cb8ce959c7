"""The built-in example: a photo and a painting that ship with the install (no download).

The photo is Chelsea the cat from scikit-image's wheel; the painting is Van Gogh's *The
Starry Night* (public domain), shipped inside nstyle as a 640x400 JPEG (see
nstyle/data/PROVENANCE.md). The example runs at 256 px, a single scale, so a new install
finishes in a minute or two on a laptop CPU.
"""

from __future__ import annotations

from importlib import resources

from PIL import Image

#: option overrides for 'nstyle example' (the user's flags still win)
EXAMPLE_DEFAULTS = {"size": 256}


def example_painting() -> Image.Image:
    """The shipped painting as an RGB PIL image."""
    with resources.files("nstyle").joinpath("data/starry_night.jpg").open("rb") as f:
        return Image.open(f).convert("RGB")


def example_images() -> tuple[Image.Image, Image.Image]:
    """(content, style) as RGB PIL images."""
    from skimage import data

    return Image.fromarray(data.chelsea()), example_painting()
