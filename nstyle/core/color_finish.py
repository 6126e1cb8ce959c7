"""The OkLab colour finish (``--color-finish oklab``): NNST's colour correction, usable by
any method.

Kolkin et al. (NNST, 2022) end with a colour step that trades some of the optimised
colours for robustness: the output keeps its lightness, its colours are replaced by the
photo's, mapped to the painting's palette, and smoothed so they follow the output's
lightness edges. In OkLab (Ottosson 2020: L lightness, a green-red, b blue-yellow):

1. L: the output's, clamped to the painting's range of L;
2. a, b: the photo's a/b with their mean and covariance mapped to the painting's by ZCA
   (``color.zca_match``: the symmetric square roots, as ``match_color``'s pca); for a
   painting with (almost) no colour the output's own a/b are mapped instead, so a grey
   painting gives a grey picture;
3. five passes of a 3 x 3 bilateral filter over a/b, each neighbour weighted by
   exp(-10 |ΔL|) (ΔL the output lightness difference), so colours stop at the edges the
   output's lightness draws rather than the photo's;
4. a and b clamped to the painting's ranges, back to RGB, clamped to [0, 1].

Departure from the official code, on purpose: it converts the 0..1 sRGB values to OkLab as
if they were linear; here sRGB is decoded to linear light first (OkLab's definition).
Pure functions on RGB (1, 3, H, W) tensors in [0, 1]; no files, no network.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from nstyle.core.color import zca_match

# Ottosson's OkLab: linear sRGB -> LMS, then cube roots -> Lab (and back)
_RGB_TO_LMS = torch.tensor([[0.4122214708, 0.5363325363, 0.0514459929],
                            [0.2119034982, 0.6806995451, 0.1073969566],
                            [0.0883024619, 0.2817188376, 0.6299787005]], dtype=torch.float64)
_LMS_TO_LAB = torch.tensor([[0.2104542553, 0.7936177850, -0.0040720468],
                            [1.9779984951, -2.4285922050, 0.4505937099],
                            [0.0259040371, 0.7827717662, -0.8086757660]], dtype=torch.float64)
_LAB_TO_LMS = torch.linalg.inv(_LMS_TO_LAB)
_LMS_TO_RGB = torch.linalg.inv(_RGB_TO_LMS)

#: NNST's choices: passes of the bilateral filter, its lightness sensitivity (weights
#: exp(-5 |ΔL|) squared), and the a/b spread below which a painting counts as colourless
FILTER_PASSES = 5
LIGHTNESS_SENSITIVITY = 10.0
COLOURLESS_VARIANCE = 6e-5


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(device=image.device, dtype=image.dtype), image)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    rgb = rgb.clamp(0, 1)
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    linear = linear.clamp(0, 1)
    return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def rgb_to_oklab(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) sRGB in [0, 1] -> OkLab (L in [0, 1], a and b within about ±0.4)."""
    lms = _apply(_RGB_TO_LMS, srgb_to_linear(rgb)).clamp_min(0)
    return _apply(_LMS_TO_LAB, lms.pow(1 / 3))


def oklab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_oklab``, clamped to [0, 1]."""
    return linear_to_srgb(_apply(_LMS_TO_RGB, _apply(_LAB_TO_LMS, lab).pow(3)))


def bilateral_ab(ab: torch.Tensor, lightness: torch.Tensor, passes: int = FILTER_PASSES) -> torch.Tensor:
    """``passes`` of a 3 x 3 filter over ``ab`` (B, 2, H, W), each neighbour weighted by
    exp(-LIGHTNESS_SENSITIVITY |ΔL|) on ``lightness`` (B, 1, H, W); borders replicated."""
    h, w = ab.shape[-2:]
    guide = F.pad(lightness, (1, 1, 1, 1), mode="replicate")
    shifts = [(i, j) for i in range(3) for j in range(3)]
    weights = [torch.exp(-LIGHTNESS_SENSITIVITY * (lightness - guide[..., i:i + h, j:j + w]).abs())
               for i, j in shifts]
    total = torch.stack(weights).sum(0)
    for _ in range(passes):
        padded = F.pad(ab, (1, 1, 1, 1), mode="replicate")
        ab = sum(wt * padded[..., i:i + h, j:j + w] for wt, (i, j) in zip(weights, shifts)) / total
    return ab


def _pixels(lab: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (H*W, C)."""
    return lab.permute(0, 2, 3, 1).reshape(-1, lab.shape[1])


def oklab_finish(output: torch.Tensor, content: torch.Tensor, styles: Sequence[torch.Tensor]) -> torch.Tensor:
    """The finished image (see the module docstring): ``output`` and ``content`` RGB
    (1, 3, H, W) in [0, 1] of one size; ``styles`` the paintings (any sizes: their pixels
    together are the palette)."""
    if output.shape != content.shape or output.ndim != 4 or output.shape[:2] != (1, 3):
        raise ValueError(f"oklab_finish: output and content must be RGB (1, 3, H, W) of one size, "
                         f"got {tuple(output.shape)} and {tuple(content.shape)}")
    out_lab = rgb_to_oklab(output.double())
    style_px = torch.cat([_pixels(rgb_to_oklab(s.double().to(output.device))) for s in styles])
    low, high = style_px.min(0).values, style_px.max(0).values
    lightness = out_lab[:, :1].clamp(low[0], high[0])
    style_ab = style_px[:, 1:]
    colourless = torch.cov(style_ab.T).abs().max() < COLOURLESS_VARIANCE
    source = out_lab if colourless else rgb_to_oklab(content.double())
    h, w = output.shape[-2:]
    ab = zca_match(_pixels(source[:, 1:]), style_ab).T.reshape(1, 2, h, w)
    ab = bilateral_ab(ab, lightness)
    ab = torch.max(torch.min(ab, high[1:].view(1, 2, 1, 1)), low[1:].view(1, 2, 1, 1))
    return oklab_to_rgb(torch.cat([lightness, ab], 1)).to(output.dtype).clamp(0, 1)
