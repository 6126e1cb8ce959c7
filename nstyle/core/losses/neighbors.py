"""Neural neighbour matching (Kolkin et al. 2022, "Neural Neighbor Style Transfer", NNST-Opt).

The style term ``style.neighbors``: at each position of the output, the hypercolumn (the
style layers' features, each brought to one grid and concatenated) is replaced by its
nearest neighbour, under centred cosine distance, among the style image's hypercolumns;
the output is then optimized towards these targets, the loss being the cosine distance.
The targets are matched once per scale of the coarse-to-fine schedule, from the image that
scale starts with (the content photo at the first scale when starting from it, then the
previous scale's result upsampled), so each scale refines the previous one's choices.

Where this departs from the paper, on purpose:
- The hypercolumn is the run's style layers of VGG19 (default relu1_1..relu5_1), each
  scaled by √w_l with the default layer weights w_l ∝ 1/N_l² (so f_l / N_l: the paper's own
  normalization, which keeps the 512-channel layers from dominating the distance); the
  paper uses ten VGG16 layers up to conv4_3.
- Layers are brought to the grid of relu3_x (a quarter of the image's size, as in the
  paper) by bilinear resampling, antialiased when shrinking.
- No rotated copies of the style image ("flip augmentation"), no Laplacian-pyramid
  parameterization of the output and no final per-layer "feature splitting" pass: the
  optimizer, the schedule and the colour options are the run's own.
- The nearest-neighbour search is chunked over the output's positions so that the
  distance matrix in memory stays under ``SEARCH_CHUNK_BYTES`` whatever the image size.

Several styles in a region: the loss is the blend of the distances to each style's own
nearest neighbours (weights as ``style_blend_weights``). Masks: a position counts in a
region with the weight m² of the region's mask at the grid, as the guided Gram matrices
count it, and the region's loss is a mean over all positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from nstyle.core.losses.base import StyleLoss
from nstyle.core.losses.terms import accumulation_dtype
from nstyle.core.regions import Region, layer_mask
from nstyle.options.layers import layer_channels, layer_stride

#: the key of a region's target (a ``StyleBank``) in ``Region.targets``
TARGET_KEY = "neighbors"
#: the layer whose grid the hypercolumns are resampled to (stride 4, as in the paper)
GRID_LAYER = "relu3_1"
#: bytes of one chunk of the distance matrix in the nearest-neighbour search
SEARCH_CHUNK_BYTES = 64 * 2 ** 20
_EPS = 1e-8


def grid_size(height: int, width: int) -> tuple[int, int]:
    """The hypercolumn grid of an image of height x width pixels."""
    s = layer_stride(GRID_LAYER)
    return max(1, height // s), max(1, width // s)


def hypercolumns(features: Mapping[str, torch.Tensor], layer_weights: Mapping[str, float],
                 grid: tuple[int, int]) -> torch.Tensor:
    """(B, C, gh, gw): each layer's features times √w_l, resampled to ``grid``, concatenated
    (C = the layers' channels together), float32."""
    parts = []
    for layer, w in layer_weights.items():
        f = accumulation_dtype(features[layer]) * math.sqrt(w)  # float64 stays (gradcheck)
        if tuple(f.shape[-2:]) != grid:
            shrink = f.shape[-2] > grid[0] or f.shape[-1] > grid[1]
            f = F.interpolate(f, size=grid, mode="bilinear", align_corners=False, antialias=shrink)
        parts.append(f)
    return torch.cat(parts, dim=1)


def _unit(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x / ‖x‖ along ``dim`` (a zero vector stays zero)."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(_EPS)


@dataclass
class StyleBank:
    """The hypercolumns of the style images a region draws from: one (weight, (P, C)
    matrix of positions) per style. ``* w`` and ``+`` blend banks the way the Gram targets
    are blended (``Stylizer._with_targets``): weights scale, styles are kept side by side."""

    entries: list[tuple[float, torch.Tensor]] = field(default_factory=list)

    @classmethod
    def of(cls, columns: torch.Tensor) -> "StyleBank":
        """A bank of one style image's hypercolumns (1, C, h, w)."""
        return cls([(1.0, columns[0].flatten(1).t().contiguous())])

    def __mul__(self, w: float) -> "StyleBank":
        return StyleBank([(float(w) * wi, cols) for wi, cols in self.entries])

    __rmul__ = __mul__

    def __add__(self, other: "StyleBank") -> "StyleBank":
        return StyleBank(self.entries + other.entries)

    def to(self, device) -> "StyleBank":
        return StyleBank([(w, c.to(device)) for w, c in self.entries])

    def detach(self) -> "StyleBank":
        return StyleBank([(w, c.detach()) for w, c in self.entries])

    def cpu(self) -> "StyleBank":
        return self.to("cpu")


@torch.no_grad()
def nearest(columns: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """For each position of ``columns`` (1, C, h, w), the row of ``bank`` (P, C) nearest to
    it under centred cosine distance (each set centred on its own mean, as in the paper);
    returns the chosen rows, uncentred, as (1, C, h, w). Chunked over the positions so the
    distance matrix never exceeds ``SEARCH_CHUNK_BYTES``."""
    c, h, w = columns.shape[1:]
    queries = columns[0].flatten(1).t()
    ref = _unit(bank - bank.mean(0, keepdim=True), 1)
    q = _unit(queries - queries.mean(0, keepdim=True), 1)
    chunk = max(1, SEARCH_CHUNK_BYTES // (4 * bank.shape[0]))
    picks = torch.cat([(q[i:i + chunk] @ ref.t()).argmax(1) for i in range(0, q.shape[0], chunk)])
    return bank[picks].t().reshape(1, c, h, w)


@dataclass(frozen=True, eq=False)
class NeighborTerm:
    """The neighbours' style term: ``weight`` · Σ_regions Σ_styles w_s · mean cosine
    distance to the matched targets. ``targets``: per region, per style, (w_s, (1, C, gh,
    gw)) (empty until ``matched``)."""

    layer_weights: Mapping[str, float]
    weight: float  # β times the loss's scale
    targets: tuple[tuple[tuple[float, torch.Tensor], ...], ...] = ()

    name = "style.neighbors"

    @property
    def loss(self) -> "NeighborsLoss":
        return NEIGHBORS

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.layer_weights)

    def matched(self, features: Mapping[str, torch.Tensor], image_hw: tuple[int, int],
                style_regions: Sequence[Region]) -> "NeighborTerm":
        """This term with its targets matched to ``features`` (whole-image activations of the
        image that the scale starts from)."""
        columns = hypercolumns(features, self.layer_weights, grid_size(*image_hw))
        targets = tuple(tuple((w, nearest(columns, bank)) for w, bank in r.targets[TARGET_KEY].entries)
                        for r in style_regions)
        return NeighborTerm(self.layer_weights, self.weight, targets)

    def evaluate(self, features: Mapping[str, torch.Tensor], style_regions: Sequence[Region],
                 image_hw: tuple[int, int]) -> torch.Tensor:
        """Unweighted loss of whole-image ``features``."""
        if not self.targets:
            raise RuntimeError("the neighbours' targets are matched at each scale before optimizing")
        grid = grid_size(*image_hw)
        out = _unit(hypercolumns(features, self.layer_weights, grid), 1)
        total = out.new_zeros(())
        for region, matched in zip(style_regions, self.targets):
            weight = out.new_ones((1, 1) + grid) if region.mask is None else \
                layer_mask(region.mask, GRID_LAYER).float().pow(2)
            for w, target in matched:
                # ½‖f̂ − t̂‖² is 1 − cos(f, t), and 0 (not 1) where both are zero vectors
                distance = 0.5 * (out - _unit(target, 1)).pow(2).sum(1, keepdim=True)
                total = total + region.weight * w * (distance * weight).sum() / (grid[0] * grid[1])
        return total


class NeighborsLoss(StyleLoss):
    """Nearest-neighbour targets (``NeighborTerm``), matched again at every scale; cannot
    run tiled: the targets are matched on every style layer resampled to one grid over the
    whole image, which a tile's edges would change."""

    name = "neighbors"
    scale = 1e8
    tiles = False
    untiled_reason = (
        "style_loss neighbors cannot run tiled: its targets are nearest neighbours matched on "
        "every style layer resampled to one grid over the whole image, which a tile's edges would "
        "change; use gram or meancov, a smaller size, or tile_size 0")
    rematches_per_scale = True
    # its targets are hypercolumns over every style layer at once: a scale cannot drop one
    separable_layers = False
    # Golden Gate x The Scream at 256 px climbed from iteration 20 (1.95e12 to 3.5e12) into
    # rainbow noise without the restarts (see ``nstyle.core.optimizer``)
    restarts_on_rise = True

    def targets(self, features, layer_weights, image_hw):
        columns = hypercolumns(features, layer_weights, grid_size(*image_hw))
        return {TARGET_KEY: StyleBank.of(columns)}

    def terms(self, layer_weights, beta):
        return (NeighborTerm(layer_weights, beta),) if layer_weights else ()

    def extra_bytes(self, height, width, layers, style_hw):
        """The hypercolumns (every style layer's channels on a quarter-size grid) of the
        style, the targets, the output and its gradient, plus one chunk of the search."""
        channels = sum(layer_channels(l) for l in set(layers))
        grid = (height // 4 or 1) * (width // 4 or 1)
        style_grid = (style_hw[0] // 4 or 1) * (style_hw[1] // 4 or 1)
        return channels * 4 * (style_grid + 4 * grid) + SEARCH_CHUNK_BYTES


NEIGHBORS = NeighborsLoss()
