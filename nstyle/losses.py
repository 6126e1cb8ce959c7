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


def guided_gram(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Guided Gram matrix (Gatys et al. 2017, section 4): the Gram of the features weighted
    by a guidance channel, divided by the guidance's mass Σ m², shape (B, N, N).

    ``mask`` is (B or 1, 1, H, W) in [0, 1] at the features' resolution. With a binary mask
    this is the mean of f fᵀ over the region's positions, so it compares directly with
    ``gram`` of a whole style image. An empty mask gives zeros.
    """
    b, n, h, w = features.shape
    weighted = _accumulation_dtype(features) * mask.to(features.device, torch.float32)
    flat = weighted.reshape(b, n, h * w)
    mass = mask.float().pow(2).sum().clamp_min(1e-8)
    return torch.bmm(flat, flat.transpose(1, 2)) / mass


def guided_style_loss(features: torch.Tensor, mask: torch.Tensor,
                      target_gram: torch.Tensor) -> torch.Tensor:
    """Style loss of one region: E_l on the guided Gram, times the region's share of the
    positions (Σ m² / M), so that each pixel feels the same style pressure whatever the size
    of its region; a mask of ones gives exactly ``style_loss``.
    """
    n, h, w = features.shape[1], features.shape[2], features.shape[3]
    share = mask.float().pow(2).sum() / (h * w)
    if float(share) <= 0:
        return features.new_zeros((), dtype=torch.float32)
    return share * (guided_gram(features, mask) - target_gram).pow(2).sum() / (4.0 * n * n)
