"""Loss terms of Gatys et al.: small pure functions on feature maps.

Shapes: features are (B, N, H, W) with N channels and M = H*W positions. Every loss
returns a 0-dim tensor (summed over the batch).
"""

from __future__ import annotations

import torch


def _accumulation_dtype(t: torch.Tensor) -> torch.Tensor:
    """Half-precision features are upcast so sums and Grams accumulate in float32."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def gram(features: torch.Tensor) -> torch.Tensor:
    """Position-normalized Gram matrix G/M, shape (B, N, N), at least float32.

    The paper's Gram is F Fᵀ; we divide by M so that a style image of any size gives
    comparable targets (``style_loss`` undoes this, so its value is the paper's E_l
    whenever style and output have the same size).
    """
    b, n, h, w = features.shape
    flat = _accumulation_dtype(features.reshape(b, n, h * w))
    return torch.bmm(flat, flat.transpose(1, 2)) / (h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_content = 1/2 · Σ (F − P)²  (Gatys et al. 2016, eq. 1)."""
    return 0.5 * (_accumulation_dtype(features) - _accumulation_dtype(target)).pow(2).sum()


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """E_l = 1/(4 N² M²) · Σ (G − A)²  (eq. 4), with ``target_gram`` = A/M as from ``gram``.

    Since G/M − A/M = (G − A)/M, this equals 1/(4 N²) · Σ (G/M − A/M)².
    """
    n = features.shape[1]
    return (gram(features) - target_gram).pow(2).sum() / (4.0 * n * n)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Squared total variation Σ (x[i, j+1] − x[i, j])² + (x[i+1, j] − x[i, j])²."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return _accumulation_dtype(dx).pow(2).sum() + _accumulation_dtype(dy).pow(2).sum()
