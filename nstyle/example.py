"""The built-in example: a photo and a picture that ship inside scikit-image's wheel.

scikit-image bundles a few real images (no download): the content is Chelsea the cat, the
"style" is the Hubble Deep Field, whose swirls of galaxies on black make a striking texture.
The example runs smaller and shorter than the defaults so a new install finishes in minutes.
"""

from __future__ import annotations

from PIL import Image

#: option overrides for 'nstyle example' (the user's flags still win). The Hubble field's
#: statistics are so far from a photo's that the default style weight buries the cat at
#: 256 px (looked at: 1e4 and 1e3 leave only a starfield); 50 keeps the cat and the stars.
EXAMPLE_DEFAULTS = {"size": 256, "iterations": 150, "style_weight": 50.0}


def example_images() -> tuple[Image.Image, Image.Image]:
    """(content, style) as RGB PIL images."""
    from skimage import data

    return Image.fromarray(data.chelsea()), Image.fromarray(data.hubble_deep_field())
