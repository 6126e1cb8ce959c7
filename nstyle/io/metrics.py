"""Image-quality proxies: numbers that explain what judges see in a stylized image.

They explain, they do not decide: a change meant to make pictures better is decided by
blind side-by-side judging (bench/quality.py makes the sheets). Two artefacts judges name
again and again have a number here:

- chroma speckle: rainbow-coloured pixel noise over flat areas. Measured as the energy of
  the chroma channels' fine detail (what a small Gaussian blur removes), best read
  relative to the style painting's own, since brushwork has some too.
- edge bands: a noisy or pale strip along the image border. Measured per edge as the
  fine-detail energy of the outer band over that of the interior, and as the luminance
  step between the outer band and the band just inside it.

And one for how much of the photo a result keeps (``structure_kept``): whether the balance
of content and style is the same at every output size.

Images are float arrays (H, W, 3) RGB in [0, 1], or anything ``as_array`` takes.
"""

from __future__ import annotations

from typing import Union

import numpy as np
from PIL import Image
from skimage.color import rgb2ycbcr
from skimage.filters import gaussian
from skimage.metrics import structural_similarity

ImageLike = Union[np.ndarray, Image.Image]

#: the blur whose residue counts as fine detail: 1 px removes pixel-level noise and keeps
#: brush strokes, which span several pixels at the sizes we run
DETAIL_SIGMA = 1.0


def as_array(image: ImageLike) -> np.ndarray:
    """(H, W, 3) float64 RGB in [0, 1] from a PIL image or a uint8/float array."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    return array.astype(np.float64)


def _detail(channels: np.ndarray) -> np.ndarray:
    """What a small blur removes from each channel of (H, W, C)."""
    return channels - gaussian(channels, sigma=DETAIL_SIGMA, channel_axis=-1, mode="reflect")


def _ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Y, Cb, Cr rescaled to about [0, 1] each."""
    return rgb2ycbcr(rgb) / 255.0


def chroma_detail_energy(image: ImageLike) -> float:
    """Mean squared fine detail of the chroma (Cb, Cr) channels: high for rainbow speckle."""
    chroma = _ycbcr(as_array(image))[..., 1:]
    return float(np.mean(_detail(chroma) ** 2))


def chroma_speckle(image: ImageLike, style: ImageLike) -> float:
    """``chroma_detail_energy`` of the image over that of the style painting at the same
    number of pixels: about 1 is the painting's own grain, well above 1 is speckle."""
    array = as_array(image)
    h, w = array.shape[:2]
    style_img = Image.fromarray((as_array(style) * 255).round().astype(np.uint8))
    scale = (h * w / (style_img.width * style_img.height)) ** 0.5
    size = (max(8, round(style_img.width * scale)), max(8, round(style_img.height * scale)))
    reference = chroma_detail_energy(style_img.resize(size, Image.Resampling.LANCZOS))
    return chroma_detail_energy(array) / max(reference, 1e-12)


def band_width(height: int, width: int) -> int:
    """Width of the border band examined: 8 px at 512x384, at least 2."""
    return max(2, round(min(height, width) / 48))


def edge_bands(image: ImageLike, width: int = 0) -> dict[str, float]:
    """Per-image border statistics, the worst edge of four.

    ``detail_ratio``: fine-detail energy (all channels) of the outer band of ``width`` px
    over that of the interior (about 1 when the border looks like the rest; a noisy band
    is well above 1). ``luma_step``: the largest |mean luminance of the outer band -
    mean luminance of the band just inside it|, in [0, 1] (a pale or dark strip).
    """
    ycc = _ycbcr(as_array(image))
    h, w = ycc.shape[:2]
    b = width or band_width(h, w)
    if min(h, w) < 6 * b:
        raise ValueError(f"image {w}x{h} is too small for {b}-px edge bands")
    energy = (_detail(ycc) ** 2).sum(axis=-1)
    interior = float(energy[2 * b:-2 * b, 2 * b:-2 * b].mean())
    luma = ycc[..., 0]
    outer = {"top": np.s_[:b, :], "bottom": np.s_[-b:, :], "left": np.s_[:, :b], "right": np.s_[:, -b:]}
    inner = {"top": np.s_[b:2 * b, :], "bottom": np.s_[-2 * b:-b, :],
             "left": np.s_[:, b:2 * b], "right": np.s_[:, -2 * b:-b]}
    ratio = max(float(energy[outer[e]].mean()) for e in outer) / max(interior, 1e-12)
    step = max(abs(float(luma[outer[e]].mean() - luma[inner[e]].mean())) for e in outer)
    return {"detail_ratio": ratio, "luma_step": step}


def _luma_at(image: ImageLike, size: tuple[int, int]) -> np.ndarray:
    """Luminance (H, W) in [0, 1] of ``image`` resized (Lanczos) to ``size`` (w, h)."""
    pil = Image.fromarray((as_array(image) * 255).round().astype(np.uint8))
    return _ycbcr(as_array(pil.resize(size, Image.Resampling.LANCZOS)))[..., 0]


def structure_kept(image: ImageLike, content: ImageLike, size: int = 128) -> float:
    """How much of the content photo's structure a result keeps: the SSIM of the two
    luminances, both seen at ``size`` px on the longest side of ``image`` (Gaussian window,
    sigma 1.5; the content resized to the same pixels).

    Comparing at one common size makes outputs of different sizes comparable (a 512 px
    result's fine brushwork is averaged away as a 128 px one's would be). Near 0: the photo
    is gone under texture; the photo itself scores 1."""
    h, w = as_array(image).shape[:2]
    scale = size / max(h, w)
    common = (max(8, round(w * scale)), max(8, round(h * scale)))
    a, b = _luma_at(image, common), _luma_at(content, common)
    return float(structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))
