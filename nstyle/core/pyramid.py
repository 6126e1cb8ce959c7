"""An image held as the levels of a Laplacian pyramid, the parameterisation NNST optimises.

Kolkin et al. ("Neural Neighbor Style Transfer", 2022) do not optimise pixels: the image is
a Laplacian pyramid (8 levels by default) and, at each scale of their coarse-to-fine
schedule, Adam updates only the levels at and coarser than that scale. A step on a coarse
level moves a whole region of the picture at once, so large shapes form early and cheaply,
and the fine levels (the high frequencies where speckle and grids live) stay untouched until
the scale that owns them.

Level ``0`` is the finest detail (full size), level ``k`` has the size of the image halved
``k`` times (each side floored, as ``h // 2``), and the last entry is the low-pass residual.
``reconstruct(levels[k:])`` is the image at the size of level ``k``: the picture as the
scale ``k`` of a coarse-to-fine run sees it. Halving and doubling are bilinear
(``align_corners=False``), as in NNST; reconstruction undoes decomposition exactly (up to
float rounding) whatever the resampler, because each detail level is defined as what the
resampling loses.

Pure torch; works on any (B, C, H, W) floating tensor, on any device.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

NNST_LEVELS = 8


def _resample(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def usable_levels(height: int, width: int, wanted: int) -> int:
    """How many detail levels an image of this size can hold, at most ``wanted``.

    Each level halves both sides; a side is never halved below one pixel.
    """
    levels = 0
    while levels < wanted and min(height, width) >= 2:
        height, width = height // 2, width // 2
        levels += 1
    return levels


def decompose(image: torch.Tensor, levels: int = NNST_LEVELS) -> list[torch.Tensor]:
    """The Laplacian pyramid of ``image`` (B, C, H, W): ``levels`` detail levels, finest first,
    then the low-pass residual. Fewer detail levels when the image is too small to halve that
    often (``usable_levels``)."""
    if image.ndim != 4:
        raise ValueError(f"decompose: expected a (B, C, H, W) tensor, got shape {tuple(image.shape)}")
    if levels < 0:
        raise ValueError(f"decompose: levels must be >= 0, got {levels}")
    pyramid = []
    current = image
    for _ in range(usable_levels(*image.shape[-2:], levels)):
        h, w = current.shape[-2:]
        smaller = _resample(current, (h // 2, w // 2))
        pyramid.append(current - _resample(smaller, (h, w)))
        current = smaller
    pyramid.append(current)
    return pyramid


def reconstruct(levels: Sequence[torch.Tensor]) -> torch.Tensor:
    """The image a pyramid (or its coarse end, ``levels[k:]``) stands for, at the size of
    ``levels[0]``."""
    if not levels:
        raise ValueError("reconstruct: no levels")
    image = levels[-1]
    for detail in reversed(levels[:-1]):
        image = detail + _resample(image, tuple(detail.shape[-2:]))
    return image


class LaplacianPyramid:
    """An image as pyramid levels, some of them optimisable.

    ``trainable(k)`` returns the levels ``k`` and coarser as fresh leaf tensors that require
    gradients (hand them to the optimiser); the finer levels are held detached, so gradients
    reach only the chosen levels. ``image(k)`` is the picture at level ``k``'s size.
    """

    def __init__(self, levels: Sequence[torch.Tensor]):
        if not levels:
            raise ValueError("LaplacianPyramid: no levels")
        self.levels = [level.detach() for level in levels]

    @classmethod
    def from_image(cls, image: torch.Tensor, levels: int = NNST_LEVELS) -> "LaplacianPyramid":
        return cls(decompose(image.detach(), levels))

    def __len__(self) -> int:
        return len(self.levels)

    def size(self, level: int = 0) -> tuple[int, int]:
        """(H, W) of the image ``image(level)`` returns."""
        return tuple(self.levels[self._index(level)].shape[-2:])  # type: ignore[return-value]

    def image(self, level: int = 0) -> torch.Tensor:
        """The image at the size of ``level`` (0: full size), from that level and the coarser
        ones; differentiable with respect to the trainable levels among them."""
        return reconstruct(self.levels[self._index(level):])

    def trainable(self, level: int) -> list[torch.Tensor]:
        """Make levels ``level`` and coarser optimisable; every finer level is frozen.

        Returns the trainable tensors (leaves with ``requires_grad``), coarse end last."""
        first = self._index(level)
        self.levels = [t.detach() for t in self.levels[:first]] + \
                      [t.detach().clone().requires_grad_(True) for t in self.levels[first:]]
        return self.levels[first:]

    def freeze(self) -> None:
        """Detach every level (after a scale's optimisation, before the next one)."""
        self.levels = [t.detach() for t in self.levels]

    def zero_finest(self, count: int) -> None:
        """Zero the ``count`` finest detail levels: the image becomes its own blurred version
        (NNST starts from the content with its finest three levels zeroed)."""
        for i in range(min(count, len(self.levels) - 1)):
            self.levels[i] = torch.zeros_like(self.levels[i]).detach()

    def replace(self, image: torch.Tensor, level: int = 0) -> None:
        """Set levels ``level`` and coarser from ``image`` (of that level's size), keeping the
        finer ones: after an optimisation at a scale, hold its result again as levels."""
        first = self._index(level)
        if tuple(image.shape[-2:]) != self.size(first):
            raise ValueError(f"replace: image is {tuple(image.shape[-2:])}, level {level} is {self.size(first)}")
        self.levels[first:] = decompose(image.detach(), len(self.levels) - 1 - first)

    def _index(self, level: int) -> int:
        if not 0 <= level < len(self.levels):
            raise ValueError(f"level {level} out of range: this pyramid has levels 0..{len(self.levels) - 1}")
        return level
