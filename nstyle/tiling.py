"""Bounded memory for large outputs: exact loss gradients computed tile by tile.

VGG19's activations for a 4096 x 3072 image take about 30 GB, so large outputs cannot go
through the network in one piece on a modest machine. The losses split, though:

- content and total-variation terms are sums over positions;
- the Gram matrix of a layer is a sum over positions, Σ_p f_p f_pᵀ, and the style loss's
  gradient at one position, (G − A) f_p / (N² M), only needs the finished global G.

So one iteration makes two passes over overlapping tiles. Pass 1 (no gradients) adds up each
region's guided Gram matrix from every tile's core. Pass 2 runs each tile forward and
backward on a surrogate loss, Σ ⟨D, F_core F_coreᵀ⟩ with D = (G − A) held fixed, whose
gradient at every core position is exactly the style loss's, plus the content loss on the
core; the tiles' pixel gradients are added into one full-size gradient.

Exactness: every tile is its core widened by a halo at least the receptive-field radius of
the deepest layer used (85 px for relu5_1, so 96), and tiles start on multiples of 16 so
the 2×2 poolings fall on the same grid as in the whole image. A core position's feature
then sees exactly the pixels it would see in the whole image, and the loss and gradient
equal the untiled ones up to float rounding (the tests check this). Nothing is blended, so
there are no seams. The cost is one extra forward pass plus the halos' overlap.

Only the peak memory of one tile's forward/backward depends on the tile size; what grows
with the image is a few image-sized buffers, the content targets and L-BFGS's history.
``estimate_peak`` adds these up so a front end can refuse a run that cannot fit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch

from .regions import Region, layer_mask, pools_before
from .vgg import LAYER_NAMES, layer_channels

#: tiles start on multiples of this (VGG19 pools four times before conv5_1)
ALIGN = 16


def layer_stride(layer: str) -> int:
    """Pixels per feature position at ``layer``."""
    return 2 ** pools_before(layer)


def receptive_radius(layer: str) -> int:
    """How far (in pixels) beyond its own cell a ``layer`` feature looks."""
    radius, stride = 0, 1
    for name in LAYER_NAMES[: LAYER_NAMES.index(layer) + 1]:
        if name.startswith("conv"):  # 3x3, padding 1: one more position at this stride
            radius += stride
        elif name.startswith("pool"):  # 2x2 stride 2: one more position, then coarser
            radius += stride
            stride *= 2
    return radius


def halo_for(layers: Sequence[str]) -> int:
    """Halo (a multiple of ALIGN) that makes the deepest of ``layers`` exact in a tile core."""
    radius = max(receptive_radius(layer) for layer in layers)
    return ALIGN * math.ceil((radius + 1) / ALIGN)


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


def _window(image: torch.Tensor, tile: Tile) -> torch.Tensor:
    return image[..., tile.y0:tile.y1, tile.x0:tile.x1]


@torch.no_grad()
def features(vgg, image: torch.Tensor, layers: Sequence[str], tiles: Sequence[Tile]
             ) -> dict[str, torch.Tensor]:
    """Whole-image activations of ``layers`` (e.g. content targets), computed tile by tile."""
    h, w = image.shape[-2:]
    out: dict[str, torch.Tensor] = {}
    for tile in tiles:
        for layer, f in vgg(_window(image, tile), layers).items():
            if layer not in out:
                s = layer_stride(layer)
                out[layer] = f.new_zeros((f.shape[0], f.shape[1], h // s, w // s))
            ly, lx, gy, gx = tile.core(layer, h, w)
            out[layer][..., gy, gx] = f[..., ly, lx]
    return out


def _masked_core(f: torch.Tensor, mask: Optional[torch.Tensor], ly: slice, lx: slice,
                 gy: slice, gx: slice) -> torch.Tensor:
    core = f[..., ly, lx]
    if mask is not None:
        core = core * mask[..., gy, gx]
    return core.reshape(core.shape[0], core.shape[1], -1).float()


@torch.no_grad()
def gram_sums(vgg, image: torch.Tensor, layers: Sequence[str], tiles: Sequence[Tile],
              masks: Sequence[Optional[Mapping[str, torch.Tensor]]] = (None,)
              ) -> list[dict[str, torch.Tensor]]:
    """Per mask (a {layer: layer-sized mask} or None for all positions) and layer, the
    guided Gram matrix Σ (m f)(m f)ᵀ / Σ m² of the whole image, from its tiles."""
    h, w = image.shape[-2:]
    sums: list[dict[str, torch.Tensor]] = [{} for _ in masks]
    for tile in tiles:
        feats = vgg(_window(image, tile), layers)
        for layer in layers:
            ly, lx, gy, gx = tile.core(layer, h, w)
            for i, m in enumerate(masks):
                flat = _masked_core(feats[layer], None if m is None else m[layer], ly, lx, gy, gx)
                g = torch.bmm(flat, flat.transpose(1, 2))
                sums[i][layer] = sums[i][layer] + g if layer in sums[i] else g
    grams = []
    for i, m in enumerate(masks):
        out = {}
        for layer, g in sums[i].items():
            s = layer_stride(layer)
            mass = (h // s) * (w // s) if m is None else float(m[layer].float().pow(2).sum())
            out[layer] = g / max(mass, 1e-8)
        grams.append(out)
    return grams


def loss_and_grad(vgg, image: torch.Tensor, tiles: Sequence[Tile], *,
                  content_targets: Mapping[str, torch.Tensor], content_weights: Mapping[str, float],
                  regions: Sequence[Region], style_weights: Mapping[str, float],
                  alpha: float, beta: float, need_grad: bool = True
                  ) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
    """Content and style terms (as in the engine's ``_losses``) and their gradient with
    respect to ``image`` (B, 3, H, W), computed tile by tile (None without ``need_grad``).
    Total variation is not included: it is cheap on the whole image."""
    h, w = image.shape[-2:]
    image = image.detach()
    style_layers = list(style_weights)
    layers = list(dict.fromkeys(list(content_weights) + style_layers))
    region_masks = [None if r.mask is None else {l: r.layer_masks[l] for l in style_layers}
                    for r in regions]
    terms: dict[str, torch.Tensor] = {}
    # pass 1: global guided Grams, hence the style loss values and D = G − A
    diffs: list[dict[str, torch.Tensor]] = [{} for _ in regions]
    if style_layers and beta > 0:
        grams = gram_sums(vgg, image, style_layers, tiles, region_masks)
        for layer, lw in style_weights.items():
            n = layer_channels(layer)
            s = layer_stride(layer)
            positions = (h // s) * (w // s)
            value = image.new_zeros((), dtype=torch.float32)
            for i, region in enumerate(regions):
                d = grams[i][layer] - region.targets[layer]
                share = 1.0 if region.mask is None else \
                    float(region.layer_masks[layer].float().pow(2).sum()) / positions
                value = value + region.weight * share * d.pow(2).sum() / (4.0 * n * n)
                # gradient factor of ⟨D, Σ_core (m f)(m f)ᵀ⟩: see the module doc
                diffs[i][layer] = d * (beta * lw * region.weight / (2.0 * n * n * positions))
            terms[f"style.{layer}"] = beta * lw * value
    content_values = {layer: image.new_zeros((), dtype=torch.float32) for layer in content_weights}
    grad = torch.zeros_like(image) if need_grad else None
    if not need_grad and not content_weights:
        return terms, None
    # pass 2: each tile's forward/backward on the surrogate, gradients added up
    for tile in tiles:
        window = _window(image, tile).clone().requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            feats = vgg(window, layers if need_grad else list(content_weights))
        if not need_grad:
            for layer in content_weights:
                ly, lx, gy, gx = tile.core(layer, h, w)
                content_values[layer] += 0.5 * (feats[layer][..., ly, lx].float()
                                                - content_targets[layer][..., gy, gx].float()).pow(2).sum()
            continue
        surrogate = window.new_zeros((), dtype=torch.float32)
        for layer, lw in content_weights.items():
            ly, lx, gy, gx = tile.core(layer, h, w)
            part = 0.5 * (feats[layer][..., ly, lx].float()
                          - content_targets[layer][..., gy, gx].float()).pow(2).sum()
            content_values[layer] = content_values[layer] + part.detach()
            surrogate = surrogate + alpha * lw * part
        if beta > 0:
            for layer in style_layers:
                ly, lx, gy, gx = tile.core(layer, h, w)
                for i in range(len(regions)):
                    m = region_masks[i]
                    flat = _masked_core(feats[layer], None if m is None else m[layer], ly, lx, gy, gx)
                    surrogate = surrogate + (torch.bmm(diffs[i][layer], flat) * flat).sum()
        surrogate.backward()
        grad[..., tile.y0:tile.y1, tile.x0:tile.x1] += window.grad
        del feats, surrogate, window
    content_terms = {f"content.{layer}": alpha * lw * content_values[layer]
                     for layer, lw in content_weights.items()}
    return {**content_terms, **terms}, grad


# --------------------------------------------------------------------------- memory


def available_memory() -> int:
    """Bytes of memory this process may still take (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # other Unixes: all physical memory, the best we can cheaply know
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2 ** 30


#: bytes the process takes before any image (Python, torch, VGG19 weights up to relu5_1)
BASE_BYTES = 700 * 2 ** 20


def network_bytes(height: int, width: int, last_layer: str, backward: bool) -> int:
    """Peak bytes of one forward (and backward) pass of a height x width image.

    Forward with gradients keeps every conv and relu output; backward needs about two of the
    largest activation at once on top. Without gradients only a few activations live at a
    time. Calibrated against measured peaks on CPU (it errs on the high side).
    """
    sizes = []
    for name in LAYER_NAMES[: LAYER_NAMES.index(last_layer) + 1]:
        s = layer_stride(name)
        sizes.append(layer_channels(name) * (height // s or 1) * (width // s or 1) * 4)
    if backward:
        return int(1.25 * (sum(sizes) + 3 * max(sizes)))
    return int(1.25 * 3 * max(sizes))


def image_bytes(height: int, width: int) -> int:
    return 3 * height * width * 4


def estimate_peak(height: int, width: int, *, last_layer: str, content_layers: Sequence[str],
                  tile: int, halo: int, history: int, style_hw: tuple[int, int]) -> int:
    """Estimated peak bytes of optimizing an image of (height, width) at one scale.

    tile: the core size (0 = the whole image in one pass); history: L-BFGS pairs kept (0
    for the other optimizers); style_hw: the size the style images are run at.
    """
    if tile:
        win = (min(height, tile + 2 * halo), min(width, tile + 2 * halo))
        net = network_bytes(*win, last_layer, backward=True)
        style_net = network_bytes(min(style_hw[0], tile + 2 * halo),
                                  min(style_hw[1], tile + 2 * halo), last_layer, backward=False)
    else:
        net = network_bytes(height, width, last_layer, backward=True)
        style_net = network_bytes(*style_hw, last_layer, backward=False)
    img = image_bytes(height, width)
    # x, its grad, the content image, the kept best copy, the composed image and its grad,
    # L-BFGS's direction and previous gradient, the masks, plus two per history pair
    buffers = (10 + 2 * history) * img
    targets = sum(layer_channels(l) * (height // layer_stride(l)) * (width // layer_stride(l)) * 4
                  for l in content_layers)
    return BASE_BYTES + max(net, style_net) + buffers + targets


#: tile cores tried, largest first, when the whole image (0) does not fit
TILE_CHOICES = (0, 1024, 768, 512, 384, 256, 192, 128)
