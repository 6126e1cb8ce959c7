"""Tiles: the windows an image goes through the network in, and the cores whose features
count (the geometry behind ``nstyle.core.tiling``; see there for why the result is exact).

Each style loss sums its own statistics over tile cores with these helpers
(``nstyle.core.losses``), so this module knows no loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from nstyle.options.layers import ALIGN, layer_stride


@dataclass(frozen=True)
class Tile:
    """A tile: the window run through the network, and the core whose features count."""

    y0: int
    y1: int
    x0: int
    x1: int  # window [y0, y1) x [x0, x1)
    cy0: int
    cy1: int
    cx0: int
    cx1: int  # core, inside the window

    def core(self, layer: str, height: int, width: int) -> tuple[slice, slice, slice, slice]:
        """(window-local rows, cols, global rows, cols) of the core's positions at ``layer``."""
        # starts are multiples of ALIGN, so every start divides exactly; a core that ends at
        # the image's edge ends where the whole image's floor-pooled map ends
        s = layer_stride(layer)
        gy0, gy1 = self.cy0 // s, self.cy1 // s
        gx0, gx1 = self.cx0 // s, self.cx1 // s
        oy, ox = self.y0 // s, self.x0 // s
        return (slice(gy0 - oy, gy1 - oy), slice(gx0 - ox, gx1 - ox),
                slice(gy0, gy1), slice(gx0, gx1))


def make_tiles(height: int, width: int, core: int, halo: int) -> list[Tile]:
    """Cover an image with cores of ``core`` px (a multiple of ALIGN) and halo-wide margins."""
    if core % ALIGN or halo % ALIGN:
        raise ValueError(f"core and halo must be multiples of {ALIGN}, got {core} and {halo}")
    tiles = []
    for cy0 in range(0, height, core):
        cy1 = min(cy0 + core, height)
        for cx0 in range(0, width, core):
            cx1 = min(cx0 + core, width)
            tiles.append(Tile(max(0, cy0 - halo), min(height, cy1 + halo),
                              max(0, cx0 - halo), min(width, cx1 + halo), cy0, cy1, cx0, cx1))
    return tiles


def window(image: torch.Tensor, tile: Tile) -> torch.Tensor:
    return image[..., tile.y0:tile.y1, tile.x0:tile.x1]


def masked_core(f: torch.Tensor, mask: Optional[torch.Tensor], ly: slice, lx: slice,
                gy: slice, gx: slice) -> torch.Tensor:
    """A tile's core positions of features ``f``, times the layer-sized ``mask`` there (None:
    all count), as (B, N, positions) float32."""
    core = f[..., ly, lx]
    if mask is not None:
        core = core * mask[..., gy, gx]
    return core.reshape(core.shape[0], core.shape[1], -1).float()


@torch.no_grad()
def features(vgg, image: torch.Tensor, layers: Sequence[str], tiles: Sequence[Tile]
             ) -> dict[str, torch.Tensor]:
    """Whole-image activations of ``layers`` (e.g. content targets), computed tile by tile."""
    h, w = image.shape[-2:]
    out: dict[str, torch.Tensor] = {}
    for tile in tiles:
        for layer, f in vgg(window(image, tile), layers).items():
            if layer not in out:
                s = layer_stride(layer)
                out[layer] = f.new_zeros((f.shape[0], f.shape[1], h // s, w // s))
            ly, lx, gy, gx = tile.core(layer, h, w)
            out[layer][..., gy, gx] = f[..., ly, lx]
    return out
