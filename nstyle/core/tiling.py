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

from typing import Optional, Sequence

import torch

from nstyle.core.objective import Objective
from nstyle.core.tiles import Tile, masked_core, window


def loss_and_grad(vgg, image: torch.Tensor, tiles: Sequence[Tile], objective: Objective,
                  need_grad: bool = True) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
    """The objective's network terms (content and style, weighted, as ``Objective.evaluate``
    names them) and their gradient with respect to ``image`` (B, 3, H, W), computed tile by
    tile (None without ``need_grad``). The pixel terms are not included: they are cheap on
    the whole image (``Objective.pixel_terms``)."""
    image = image.detach()
    masks = [None if r.mask is None else {s.layer: r.layer_masks[s.layer] for s in objective.style}
             for r in objective.regions]
    # pass 1: the style loss's global statistics (``StyleLoss.tiled_style_pass``)
    style_terms, diffs = ({}, [{} for _ in objective.regions]) if not objective.style else \
        objective.style_loss.tiled_style_pass(vgg, image, tiles, objective, masks)
    if not need_grad and not objective.content:
        return style_terms, None
    content_values, grad = _tile_pass(vgg, image, tiles, objective, masks, diffs, need_grad)
    content_terms = {c.name: c.weight * content_values[c.layer] for c in objective.content}
    return {**content_terms, **style_terms}, grad


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
        patch = window(image, tile).clone().requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad):
            feats = vgg(patch, layers)
            surrogate = patch.new_zeros((), dtype=torch.float32)
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
                flat = masked_core(feats[s.layer], None if m is None else m[s.layer], ly, lx, gy, gx)
                mask_core = None if m is None else m[s.layer][..., gy, gx]
                surrogate = s.loss.tile_surrogate(surrogate, diffs[i][s.layer], flat, mask_core)
        surrogate.backward()
        grad[..., tile.y0:tile.y1, tile.x0:tile.x1] += patch.grad
        del feats, surrogate, patch
    return content, grad
