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

The terms and their formulas are the objective's (``nstyle.core.objective``): this module only
decides which pixels go through the network together and adds the pieces up. How large a
tile must be for a run to fit in memory is the plan's business (``nstyle.core.plan``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import torch

from nstyle.core import losses
from nstyle.core.objective import Objective
from nstyle.core.vgg import ALIGN, halo_for, layer_channels, layer_stride, receptive_radius  # noqa: F401 (re-exported)


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


@torch.no_grad()
def moment_sums(vgg, image: torch.Tensor, layers: Sequence[str], tiles: Sequence[Tile],
                masks: Sequence[Optional[Mapping[str, torch.Tensor]]] = (None,)
                ) -> list[dict[str, losses.FeatureMoments]]:
    """As ``gram_sums``, the weighted mean and second moment (``losses.moments``) of every
    mask and layer over the whole image, from its tiles: both are sums over positions."""
    h, w = image.shape[-2:]
    sums: list[dict[str, list[torch.Tensor]]] = [{} for _ in masks]
    for tile in tiles:
        feats = vgg(_window(image, tile), layers)
        for layer in layers:
            ly, lx, gy, gx = tile.core(layer, h, w)
            for i, m in enumerate(masks):
                weight = None if m is None else m[layer][..., gy, gx].reshape(1, 1, -1).float()
                flat = _masked_core(feats[layer], None if m is None else m[layer], ly, lx, gy, gx)
                mean = (flat if weight is None else flat * weight).sum(2)
                parts = [mean, torch.bmm(flat, flat.transpose(1, 2))]
                sums[i][layer] = parts if layer not in sums[i] else \
                    [a + b for a, b in zip(sums[i][layer], parts)]
    out = []
    for i, m in enumerate(masks):
        stats = {}
        for layer, (mean, second) in sums[i].items():
            s = layer_stride(layer)
            mass = max((h // s) * (w // s) if m is None else float(m[layer].float().pow(2).sum()), 1e-8)
            stats[layer] = losses.FeatureMoments(mean / mass, second / mass)
        out.append(stats)
    return out


def loss_and_grad(vgg, image: torch.Tensor, tiles: Sequence[Tile], objective: Objective,
                  need_grad: bool = True) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
    """The objective's network terms (content and style, weighted, as ``Objective.evaluate``
    names them) and their gradient with respect to ``image`` (B, 3, H, W), computed tile by
    tile (None without ``need_grad``). The pixel terms are not included: they are cheap on
    the whole image (``Objective.pixel_terms``)."""
    image = image.detach()
    masks = [None if r.mask is None else {s.layer: r.layer_masks[s.layer] for s in objective.style}
             for r in objective.regions]
    style_terms, diffs = _style_pass(vgg, image, tiles, objective, masks)
    if not need_grad and not objective.content:
        return style_terms, None
    content_values, grad = _tile_pass(vgg, image, tiles, objective, masks, diffs, need_grad)
    content_terms = {c.name: c.weight * content_values[c.layer] for c in objective.content}
    return {**content_terms, **style_terms}, grad


def _style_pass(vgg, image: torch.Tensor, tiles: Sequence[Tile], objective: Objective, masks
                ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Pass 1: every region's global guided Gram, hence the style terms and, per region and
    layer, the fixed factor D = (G − A)·c whose surrogate ⟨D, Σ_core (m f)(m f)ᵀ⟩ has the
    style loss's gradient (c: the derivative of ``losses.gram_distance``, weights included)."""
    h, w = image.shape[-2:]
    terms: dict[str, torch.Tensor] = {}
    diffs: list[dict[str, torch.Tensor]] = [{} for _ in objective.regions]
    if not objective.style:
        return terms, diffs
    if objective.style[0].kind == "meancov":
        return _moment_style_pass(vgg, image, tiles, objective, masks)
    grams = gram_sums(vgg, image, [s.layer for s in objective.style], tiles, masks)
    for term in objective.style:
        n = layer_channels(term.layer)
        s = layer_stride(term.layer)
        positions = (h // s) * (w // s)
        value = image.new_zeros((), dtype=torch.float32)
        for i, region in enumerate(objective.regions):
            d = grams[i][term.layer] - region.targets[term.layer]
            share = 1.0 if region.mask is None else \
                float(region.layer_masks[term.layer].float().pow(2).sum()) / positions
            value = value + losses.gram_distance(d, n, region.weight * share)
            diffs[i][term.layer] = d * (term.weight * region.weight / (2.0 * n * n * positions))
        terms[term.name] = term.weight * value
    return terms, diffs


def _moment_style_pass(vgg, image: torch.Tensor, tiles: Sequence[Tile], objective: Objective, masks
                       ) -> tuple[dict[str, torch.Tensor], list[dict[str, tuple]]]:
    """Pass 1 of the meancov loss: every region's global mean μ and second moment S, hence
    the terms, and per region and layer the derivatives (dL/dS, dL/dμ) at them, divided by
    the region's mass: the surrogate ⟨dL/dS, Σ_core (m f)(m f)ᵀ⟩ + ⟨dL/dμ, Σ_core m² f⟩ then
    has the loss's exact gradient at every core position (the loss is a function of μ and S
    alone, and both are sums over positions)."""
    h, w = image.shape[-2:]
    terms: dict[str, torch.Tensor] = {}
    diffs: list[dict[str, tuple]] = [{} for _ in objective.regions]
    stats = moment_sums(vgg, image, [s.layer for s in objective.style], tiles, masks)
    for term in objective.style:
        s = layer_stride(term.layer)
        positions = (h // s) * (w // s)
        value = image.new_zeros((), dtype=torch.float32)
        for i, region in enumerate(objective.regions):
            mass = positions if region.mask is None else \
                float(region.layer_masks[term.layer].float().pow(2).sum())
            if mass <= 0:
                continue
            mean = stats[i][term.layer].mean.detach().requires_grad_(True)
            second = stats[i][term.layer].second.detach().requires_grad_(True)
            with torch.enable_grad():
                distance = losses.meancov_distance(losses.FeatureMoments(mean, second),
                                                   region.targets[term.layer])
                distance.backward()
            scale = region.weight * mass / positions  # the region's weight and share
            value = value + scale * distance.detach()
            factor = term.weight * scale / max(mass, 1e-8)
            diffs[i][term.layer] = (second.grad * factor, mean.grad * factor)
        terms[term.name] = term.weight * value
    return terms, diffs


def _tile_pass(vgg, image: torch.Tensor, tiles: Sequence[Tile], objective: Objective, masks,
               diffs: list[dict[str, torch.Tensor]], need_grad: bool
               ) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
    """Pass 2: each tile forward (and backward on the surrogate); the content values summed
    over the cores, and the tiles' pixel gradients added into one full-size gradient."""
    h, w = image.shape[-2:]
    content = {c.layer: image.new_zeros((), dtype=torch.float32) for c in objective.content}
    grad = torch.zeros_like(image) if need_grad else None
    layers = list(objective.layers) if need_grad else [c.layer for c in objective.content]
    for tile in tiles:
        window = _window(image, tile).clone().requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            feats = vgg(window, layers)
            surrogate = window.new_zeros((), dtype=torch.float32)
            for c in objective.content:
                ly, lx, gy, gx = tile.core(c.layer, h, w)
                part = c.value(feats[c.layer][..., ly, lx].float(), c.target[..., gy, gx].float())
                content[c.layer] = content[c.layer] + part.detach()
                surrogate = surrogate + c.weight * part
        if not need_grad:
            continue
        for s in objective.style:
            ly, lx, gy, gx = tile.core(s.layer, h, w)
            for i, m in enumerate(masks):
                if s.layer not in diffs[i]:
                    continue  # an empty region
                flat = _masked_core(feats[s.layer], None if m is None else m[s.layer], ly, lx, gy, gx)
                d = diffs[i][s.layer]
                if isinstance(d, tuple):  # meancov: (dL/dS, dL/dμ), see _moment_style_pass
                    weight = 1.0 if m is None else m[s.layer][..., gy, gx].reshape(1, 1, -1).float()
                    surrogate = surrogate + (torch.bmm(d[0], flat) * flat).sum() + \
                        (d[1].unsqueeze(2) * flat * weight).sum()
                else:
                    surrogate = surrogate + (torch.bmm(d, flat) * flat).sum()
        surrogate.backward()
        grad[..., tile.y0:tile.y1, tile.x0:tile.x1] += window.grad
        del feats, surrogate, window
    return content, grad
