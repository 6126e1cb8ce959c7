"""Test pictures: real images made small, and tensors from them the way the front ends
make them."""

import numpy as np
import torch
from PIL import Image


def small_picture(array: np.ndarray, size: int) -> Image.Image:
    """``array`` (e.g. one of scikit-image's bundled pictures) as RGB, ``size`` px on its
    longest side."""
    img = Image.fromarray(array).convert("RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    return img


def to_t(img: Image.Image) -> torch.Tensor:
    from nstyle.io.images import to_tensor

    return to_tensor(img)
