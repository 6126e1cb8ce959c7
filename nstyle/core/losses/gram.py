"""The paper's style loss: Gram matrices (Gatys et al. 2016, eq. 3-5), with guided Grams
for masked regions (Gatys et al. 2017, section 4). ``--style-loss gram``, the default.

Shapes: features are (B, N, H, W) with N channels and M = H*W positions.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch

from nstyle.core.losses.base import StyleLoss
from nstyle.core.regions import mask_box
from nstyle.core.losses.terms import accumulation_dtype, positions_by_channels, raw_gram
from nstyle.core.tiles import Tile, masked_core, window
from nstyle.options.layers import layer_channels, layer_stride


#: a typical painting's ``GramLoss.energy`` per layer: the geometric mean over the nine
#: built-in paintings (nstyle/data), each resized to 512 px, default pooling (avg) and
#: padding (reflect). They span 10-250x per layer, from Summer Mountains (ink on silk) up to
#: The Starry Night and Composition VII (docs/quality.md, "--style-balance")
REFERENCE_ENERGY = {
    "relu1_1": 2.0e5, "relu1_2": 6.9e7, "relu2_1": 2.5e7, "relu2_2": 3.0e7, "relu3_1": 7.6e6,
    "relu3_2": 1.4e7, "relu3_3": 2.4e8, "relu3_4": 2.0e9, "relu4_1": 5.1e8, "relu4_2": 1.1e8,
    "relu4_3": 5.2e6, "relu4_4": 3.2e4, "relu5_1": 2.0e3, "relu5_2": 38.0, "relu5_3": 1.6,
    "relu5_4": 0.023}


def gram(features: torch.Tensor) -> torch.Tensor:
    """Position-normalized Gram matrix G/M, shape (B, N, N), at least float32.

    The paper's Gram is F Fᵀ; we divide by M so that a style image of any size gives
    comparable targets (``style_loss`` undoes this, so its value is the paper's E_l
    whenever style and output have the same size).
    """
    return raw_gram(positions_by_channels(features))


def gram_distance(diff: torch.Tensor, channels: int, scale=1.0) -> torch.Tensor:
    """``scale`` · Σ (G/M − A/M)² / (4 N²) from ``diff`` = G/M − A/M: the paper's E_l (eq. 4)
    once the Grams are position-normalized. The one statement of the style formula: the
    whole-image losses below and the tiled objective (Grams summed over tiles) both use it."""
    return scale * diff.pow(2).sum() / (4.0 * channels * channels)


class _StyleLoss(torch.autograd.Function):
    """E_l with a hand-written backward: dE/dF = F (G/M − A/M) / (N² M).

    Autograd's own backward of FᵀF takes two matmuls plus a sum of two full-size
    gradients (and the elementwise chain of (G − A)²); this is one matmul, in the
    features' dtype, with the float32 difference folded into the small N×N factor.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
        flat = positions_by_channels(features)
        n = flat.shape[2]
        diff = raw_gram(flat) - target_gram
        ctx.save_for_backward(features, diff)
        return gram_distance(diff, n)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        features, diff = ctx.saved_tensors
        b, n, h, w = features.shape
        flat = positions_by_channels(features)
        factor = (diff * (grad_out / (n * n * h * w))).to(flat.dtype)
        grad_flat = torch.bmm(flat, factor)  # (B, M, N), laid out like ``flat``'s source
        if flat.stride(2) == 1:  # channels_last source: (B, H, W, N) in memory
            grad = grad_flat.reshape(b, h, w, n).permute(0, 3, 1, 2)
        else:
            grad = grad_flat.transpose(1, 2).reshape(b, n, h, w)
        return grad, None


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """E_l = 1/(4 N² M²) · Σ (G − A)²  (eq. 4), with ``target_gram`` = A/M as from ``gram``.

    Since G/M − A/M = (G − A)/M, this equals 1/(4 N²) · Σ (G/M − A/M)².
    """
    return _StyleLoss.apply(features, target_gram)


def guided_gram(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Guided Gram matrix (Gatys et al. 2017, section 4): the Gram of the features weighted
    by a guidance channel, divided by the guidance's mass Σ m², shape (B, N, N).

    ``mask`` is (B or 1, 1, H, W) in [0, 1] at the features' resolution. With a binary mask
    this is the mean of f fᵀ over the region's positions, so it compares directly with
    ``gram`` of a whole style image. An empty mask gives zeros.
    """
    b, n, h, w = features.shape
    weighted = accumulation_dtype(features) * mask.to(features.device, torch.float32)
    flat = weighted.reshape(b, n, h * w)
    mass = mask.float().pow(2).sum().clamp_min(1e-8)
    return torch.bmm(flat, flat.transpose(1, 2)) / mass


class _GuidedStyleLoss(torch.autograd.Function):
    """A region's E_l (``guided_style_loss``) with a hand-written backward, on the features
    inside the mask's bounding box only (outside it every weight is zero, so nothing there
    counts): a video frame's new ground is a strip, and its Gram need not cost a frame's.

    With W = (F ∘ m) over the box, μ = Σ m², G = WᵀW/μ and share μ/M, the backward is
    dE/dF = m ∘ W (G − A) / (N² M): one matmul, as ``_StyleLoss`` (autograd's own takes two
    and a sum), zero outside the box. In float32 throughout, as the guided Gram always was
    (a bfloat16 product changed a masked run's second step by 13% at 48 px).
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, mask: torch.Tensor, target_gram: torch.Tensor,
                box: tuple[int, int, int, int]) -> torch.Tensor:
        b, n, h, w = features.shape
        y0, y1, x0, x1 = box
        weight = mask[..., y0:y1, x0:x1].to(features.device, torch.float32)
        weighted = accumulation_dtype(features[..., y0:y1, x0:x1]) * weight
        flat = positions_by_channels(weighted)
        mass = weight.pow(2).sum().clamp_min(1e-8)
        diff = raw_gram(flat) * (flat.shape[1] / mass) - target_gram
        ctx.save_for_backward(weighted, weight, diff)
        ctx.full, ctx.box, ctx.dtype = features.shape, box, features.dtype
        return gram_distance(diff, n, mass / (h * w))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        weighted, weight, diff = ctx.saved_tensors
        b, n, h, w = ctx.full
        y0, y1, x0, x1 = ctx.box
        flat = positions_by_channels(weighted)
        factor = diff * (grad_out / (n * n * h * w))
        grad_flat = torch.bmm(flat, factor)
        bh, bw = y1 - y0, x1 - x0
        if flat.stride(2) == 1:  # channels_last, as ``_StyleLoss``
            inside = grad_flat.reshape(b, bh, bw, n).permute(0, 3, 1, 2) * weight
        else:
            inside = grad_flat.transpose(1, 2).reshape(b, n, bh, bw) * weight
        inside = inside.to(ctx.dtype)
        if (bh, bw) == (h, w):
            return inside, None, None, None
        grad = inside.new_zeros(ctx.full, dtype=ctx.dtype)
        grad[..., y0:y1, x0:x1] = inside
        return grad, None, None, None


def guided_style_loss(features: torch.Tensor, mask: torch.Tensor, target_gram: torch.Tensor,
                      box: Optional[tuple[int, int, int, int]] = None) -> torch.Tensor:
    """Style loss of one region: E_l on the guided Gram, times the region's share of the
    positions (Σ m² / M), so that each pixel feels the same style pressure whatever the size
    of its region; a mask of ones gives exactly ``style_loss``. ``box``: the mask's bounding
    box at the features' grid (``regions.mask_box``; found here when not given), None when
    the mask is empty: the loss is then zero.
    """
    if box is None:
        box = mask_box(mask)
        if box is None:
            return features.new_zeros((), dtype=torch.float32)
    return _GuidedStyleLoss.apply(features, mask, target_gram, box)


@torch.no_grad()
def gram_sums(vgg, image: torch.Tensor, layers: Sequence[str], tiles: Sequence[Tile],
              masks: Sequence[Optional[Mapping[str, torch.Tensor]]] = (None,)
              ) -> list[dict[str, torch.Tensor]]:
    """Per mask (a {layer: layer-sized mask} or None for all positions) and layer, the
    guided Gram matrix Σ (m f)(m f)ᵀ / Σ m² of the whole image, from its tiles."""
    h, w = image.shape[-2:]
    sums: list[dict[str, torch.Tensor]] = [{} for _ in masks]
    for tile in tiles:
        feats = vgg(window(image, tile), layers)
        for layer in layers:
            ly, lx, gy, gx = tile.core(layer, h, w)
            for i, m in enumerate(masks):
                flat = masked_core(feats[layer], None if m is None else m[layer], ly, lx, gy, gx)
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


class GramLoss(StyleLoss):
    """Each layer's Gram matrix G/M against the style's (``style_loss``; a region's guided
    Gram under a mask, ``guided_style_loss``). Tiles exactly: a Gram is a sum over
    positions (``gram_sums``), and its gradient at a position needs only the global G."""

    name = "gram"
    reference_energy = REFERENCE_ENERGY

    def energy(self, target):
        """Σ (A/M)² / (4N²): the style loss of an output whose Gram is zero, so the scale of
        the pull this target exerts (Summer Mountains' relu3_1 is 35x below a typical one's)."""
        return float(gram_distance(target.float(), target.shape[-1]))

    def targets(self, features, layer_weights, image_hw):
        return {layer: gram(f) for layer, f in features.items()}

    def tiled_targets(self, vgg, image, layers, tiles):
        return gram_sums(vgg, image, list(layers), tiles)[0]

    def region_loss(self, region, layer, features):
        target = region.targets[layer]
        if region.mask is None:
            return region.weight * style_loss(features, target)
        box = region.layer_boxes[layer]
        if box is None:  # the region has no position at this layer
            return features.new_zeros((), dtype=torch.float32)
        return region.weight * guided_style_loss(features, region.layer_masks[layer], target, box)

    def tiled_style_pass(self, vgg, image, tiles, objective, masks):
        """Every region's global guided Gram, hence the style terms and, per region and
        layer, the fixed factor D = (G − A)·c whose surrogate ⟨D, Σ_core (m f)(m f)ᵀ⟩ has the
        style loss's gradient (c: the derivative of ``gram_distance``, weights included)."""
        h, w = image.shape[-2:]
        terms: dict[str, torch.Tensor] = {}
        diffs: list[dict[str, torch.Tensor]] = [{} for _ in objective.regions]
        if not objective.style:
            return terms, diffs
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
                value = value + gram_distance(d, n, region.weight * share)
                diffs[i][term.layer] = d * (term.weight * region.weight / (2.0 * n * n * positions))
            terms[term.name] = term.weight * value
        return terms, diffs

    def tile_surrogate(self, surrogate, factor, flat, mask_core):
        return surrogate + (torch.bmm(factor, flat) * flat).sum()


GRAM = GramLoss()
