"""What the Gram method's optimizer moves: the pixels themselves, or the levels of a
Laplacian pyramid of the image (``--parameterization``).

The optimizer (``core.optimizer``) holds one variable ``x``; a parameterization says how
the image is made from it (``image``), how it is made from an image (``variable``) and how
it is brought back into the valid pixel range after a step (``project``).

``pixels`` is the paper's: ``x`` is the image, and nothing is computed on the way.

``pyramid`` holds the image as the levels of ``core.pyramid`` (the same decomposition NNST
optimises), packed into one flat tensor because torch's L-BFGS takes one variable. Every
level is optimised at once. A gradient step on a coarse level moves a whole region of the
picture, so the descent favours large shapes over pixel-level detail: the pyramid is a
preconditioner that lets the broad forms settle while the fine grain (where the judges
see a grid) is asked for less. Level ``k`` is stored divided by ``2**k``
(``LEVEL_GAIN``): a coarse coefficient's gradient is the sum over the ``4**k`` pixels it
covers, and without the gain a step would move the coarsest level thousands of times
further than the finest, where with it every octave of the image gets a comparable share
of each step (the low frequencies, counted in every level coarser than them, a few times
more). Reconstruction is exact, so the image the loss sees is the same function of
``x`` whatever the gains; only the path of the descent changes.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch

from nstyle.core.pyramid import decompose, reconstruct, usable_levels

#: detail levels of the ``pyramid`` parameterization: a 512 x 384 image is halved down to
#: an 8 x 6 px residual (a smaller image gets as many as it can halve, ``usable_levels``)
PYRAMID_LEVELS = 6

#: level ``k`` is stored as its coefficients times ``LEVEL_GAIN ** -k`` (see the docstring)
LEVEL_GAIN = 2.0


class Parameterization(Protocol):
    def variable(self, image: torch.Tensor) -> torch.Tensor:
        """The optimizer's variable for ``image`` (a leaf that requires gradients)."""

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """The image (1, 3, H, W) that ``x`` stands for; differentiable."""

    def project(self, x: torch.Tensor, lowest: torch.Tensor, highest: torch.Tensor) -> None:
        """Bring ``x`` in place to the nearest variable whose image lies within
        [lowest, highest] (per channel)."""


class Pixels:
    """The image is the variable."""

    #: the variable's size in images of the scale's size (the memory plan's ``variable_share``)
    share = 1.0

    def variable(self, image: torch.Tensor) -> torch.Tensor:
        return image.detach().requires_grad_(True)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.no_grad()
    def project(self, x: torch.Tensor, lowest: torch.Tensor, highest: torch.Tensor) -> None:
        x.clamp_(lowest, highest)


class Pyramid:
    """The image as Laplacian-pyramid levels, packed flat (see the module docstring)."""

    share = 4 / 3  # the levels add a third at most: 1 + 1/4 + 1/16 + ...

    def __init__(self, levels: int = PYRAMID_LEVELS, gain: float = LEVEL_GAIN) -> None:
        self.levels = levels
        self.gain = gain
        self.shapes: list[torch.Size] = []

    def _scales(self) -> list[float]:
        return [self.gain ** -k for k in range(len(self.shapes))]

    def variable(self, image: torch.Tensor) -> torch.Tensor:
        levels = decompose(image.detach(), usable_levels(*image.shape[-2:], self.levels))
        self.shapes = [level.shape for level in levels]
        packed = [level.reshape(-1) / scale for level, scale in zip(levels, self._scales())]
        return torch.cat(packed).requires_grad_(True)

    def _unpack(self, x: torch.Tensor) -> list[torch.Tensor]:
        parts = x.split([shape.numel() for shape in self.shapes])
        return [part.view(shape) * scale for part, shape, scale in zip(parts, self.shapes, self._scales())]

    def image(self, x: torch.Tensor) -> torch.Tensor:
        if not self.shapes:
            raise RuntimeError("Pyramid.image before Pyramid.variable")
        return reconstruct(self._unpack(x))

    @torch.no_grad()
    def project(self, x: torch.Tensor, lowest: torch.Tensor, highest: torch.Tensor) -> None:
        # the excess goes into the finest level (stored unscaled): the image changes by
        # exactly the clamp, and the coarser levels stay where L-BFGS put them
        image = self.image(x)
        excess = image.clamp(lowest, highest) - image
        if bool(excess.any()):
            x[:self.shapes[0].numel()] += excess.reshape(-1)


#: ``--parameterization``'s names (its choices, ``options.config.PARAMETERIZATIONS``)
KINDS = {"pixels": Pixels, "pyramid": Pyramid}


def _kind(name: Optional[str]) -> type:
    kind = KINDS.get(name or "pixels")
    if kind is None:
        raise ValueError(f"unknown parameterization {name!r}")
    return kind


def variable_share(name: Optional[str]) -> float:
    """The optimizer's variable in images of the scale's size, for the memory plan (its
    gradient and L-BFGS's history pairs are as large)."""
    return _kind(name).share


def make(name: Optional[str]) -> Parameterization:
    """The parameterization ``--parameterization`` names (None: pixels)."""
    return _kind(name)()
