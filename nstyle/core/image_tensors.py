"""Image tensors as the engine takes them: RGB (1, 3, H, W) in [0, 1]. Sizing (the one
``fit_size`` every front end uses), resizing, input checks and a key for exact pixels."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from nstyle.errors import BadOption


def fit_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """(w, h) scaled so that the longest side is ``longest``, keeping the aspect ratio."""
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_tensor(image: torch.Tensor, longest: int) -> torch.Tensor:
    """Resize an RGB batch so its longest side is ``longest`` (antialiased), values kept in [0, 1]."""
    h, w = image.shape[-2:]
    new_w, new_h = fit_size(w, h, longest)
    if (new_h, new_w) == (h, w):
        return image
    out = F.interpolate(image, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0.0, 1.0)


def crop_border(image: torch.Tensor, fraction: float) -> torch.Tensor:
    """``image`` (..., H, W) without ``fraction`` of its height and width at each border
    (rounded; at least one pixel row and column are kept)."""
    if fraction <= 0:
        return image
    h, w = image.shape[-2:]
    dy, dx = min(round(h * fraction), (h - 1) // 2), min(round(w * fraction), (w - 1) // 2)
    return image[..., dy:h - dy, dx:w - dx]


def check_image_tensor(t: torch.Tensor, what: str) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[:2] != (1, 3):
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise BadOption(f"{what}: expected a tensor of shape (1, 3, H, W) in [0, 1], got {shape}")
    if min(t.shape[-2:]) < 1:
        raise BadOption(f"{what} has no pixels")


def digest(image: torch.Tensor) -> tuple:
    """A key for an image's exact pixels (and shape, dtype)."""
    data = image.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return tuple(image.shape), str(image.dtype), hashlib.sha256(data.numpy().tobytes()).hexdigest()


def hw(image: torch.Tensor) -> tuple[int, int]:
    return tuple(image.shape[-2:])  # type: ignore[return-value]
