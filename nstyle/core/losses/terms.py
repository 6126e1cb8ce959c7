"""The loss terms besides the style loss: content, total variation and temporal
consistency, and the helpers every loss shares (float32 accumulation, feature layout).

Shapes: features are (B, N, H, W) with N channels and M = H*W positions. Every loss
returns a 0-dim tensor (summed over the batch).
"""

from __future__ import annotations

import torch


def accumulation_dtype(t: torch.Tensor) -> torch.Tensor:
    """Half-precision features are upcast so sums and Grams accumulate in float32."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def positions_by_channels(features: torch.Tensor) -> torch.Tensor:
    """(B, N, H, W) -> a (B, M, N) view: no copy for channels_last or contiguous features."""
    b, n, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        return features.permute(0, 2, 3, 1).reshape(b, h * w, n)  # (B, H, W, N) in memory
    return features.reshape(b, n, h * w).transpose(1, 2)


def raw_gram(flat: torch.Tensor) -> torch.Tensor:
    """FᵀF/M as float32 from a (B, M, N) view.

    bfloat16 features are multiplied as they are: the matrix units accumulate in float32
    and only the N×N result is rounded, then upcast. Upcasting the features first instead
    (an extra full-size copy and a float32 product) was slower and no better in loss
    (bench/benchmark.py, docs/benchmark.md).
    """
    return accumulation_dtype(torch.bmm(flat.transpose(1, 2), flat)) / flat.shape[1]


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_content = 1/2 · Σ (F − P)²  (Gatys et al. 2016, eq. 1)."""
    return 0.5 * (accumulation_dtype(features) - accumulation_dtype(target)).pow(2).sum()


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Squared total variation Σ (x[i, j+1] − x[i, j])² + (x[i+1, j] − x[i, j])²."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return accumulation_dtype(dx).pow(2).sum() + accumulation_dtype(dy).pow(2).sum()


def temporal_loss(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ c · (x − ω)² over pixels and channels (Ruder et al. 2016, eq. 2, as a sum like the
    content and tv terms rather than a mean): ``target`` ω is the previous stylized video
    frame warped to this one, ``mask`` c (B or 1, 1, H, W) in [0, 1] where that warp is
    trusted."""
    diff = accumulation_dtype(image) - accumulation_dtype(target)
    return (mask.to(diff.dtype) * diff.pow(2)).sum()
