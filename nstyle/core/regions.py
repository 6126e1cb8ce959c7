"""Spatial control (Gatys et al., CVPR 2017, section 4): styles confined to regions.

Each style image may carry a mask: a grayscale image of any size, white where that style
goes, black where it does not, gray for a soft edge. A style without a mask covers what no
mask claims (the whole image when nobody has a mask). A keep mask marks content that must
stay as it is: it is removed from every style's region, and the engine pins those pixels to
the content photo (see ``compose``).

Guided Gram matrices: for region r and layer l, G_r = (F ∘ m_r)(F ∘ m_r)ᵀ / Σ m_r², where
m_r is the mask brought to layer l's resolution (``layer_mask``). Each region's loss is
weighted by its share of the positions, so the style pressure per pixel is the same as in
an unmasked run (``nstyle.core.losses.gram.guided_style_loss``).

Propagation of the masks to the layers, chosen on purpose: the mask (resized, antialiased,
to the output's pixels) is average-pooled 2×2 with stride 2 exactly where VGG pools, so a
feature position's guidance is the fraction of its own 2^k × 2^k cell of pixels that lies in
the region, and the mask's grid lines up with the features' grid at every layer (odd sizes
floor, as the network does). We do not erode masks by the receptive field: at deep layers
the positions on a border mix both regions' statistics in proportion, which gives soft
transitions instead of seams; masks sharper than that are softened by the network anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from nstyle.options.layers import pools_before

#: regions whose mask covers less than this share of the output are dropped
MIN_SHARE = 1e-3


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Mask resized to (height, width), antialiased when shrinking, values kept in [0, 1]."""
    if tuple(mask.shape[-2:]) == (height, width):
        return mask
    return F.interpolate(mask.float(), size=(height, width), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def layer_mask(mask: torch.Tensor, layer: str) -> torch.Tensor:
    """An output-sized mask brought to ``layer``'s grid (2×2 average pooling per VGG pool)."""
    for _ in range(pools_before(layer)):
        mask = F.avg_pool2d(mask, kernel_size=2, stride=2)
    return mask


@dataclass
class Region:
    """One style region: which styles (with their blend weights) and where."""

    styles: dict[int, float]  # style index -> weight within the region (sums to 1)
    mask: Optional[torch.Tensor]  # (1, 1, H, W) in [0, 1] at the output size; None = everywhere
    weight: float = 1.0  # multiplier of the region's style loss
    targets: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> Gram/M
    layer_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    #: layer -> the layer mask's bounding box (``mask_box``), found once per scale so the
    #: loop neither syncs a GPU nor computes a Gram where the mask is zero
    layer_boxes: dict[str, Optional[tuple[int, int, int, int]]] = field(default_factory=dict)

    def at_layers(self, layers: Sequence[str]) -> None:
        if self.mask is not None:
            self.layer_masks = {layer: layer_mask(self.mask, layer) for layer in layers}
            self.layer_boxes = {layer: mask_box(m) for layer, m in self.layer_masks.items()}


def mask_box(mask: torch.Tensor) -> Optional[tuple[int, int, int, int]]:
    """(top, bottom, left, right), ends exclusive, of the nonzero positions of ``mask``
    (…, H, W); None when it has none."""
    planes = mask.reshape(-1, *mask.shape[-2:])
    rows = torch.nonzero(planes.amax(dim=(0, 2)))
    cols = torch.nonzero(planes.amax(dim=(0, 1)))
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def plan(count: int, masks: Sequence[Optional[torch.Tensor]], blend: Optional[Sequence[float]],
         keep: Optional[torch.Tensor], height: int, width: int,
         apart: Optional[torch.Tensor] = None) -> list[Region]:
    """The style regions of one run at output size (height, width).

    count: number of style images; masks: one per style (None = unmasked); blend: the
    style_blend_weights (None = equal); keep: the keep mask or None. Masked styles each get
    a region weighted by their blend weight (equal weights give 1); unmasked styles share
    one region, blended as usual, over whatever no mask claims. apart: a mask (any size)
    that splits that shared region in two with the same styles, so the pixels under it
    must match the styles on their own (a video frame's new ground, see ``TemporalTarget``).
    """
    if len(masks) != count:
        raise ValueError(f"{len(masks)} masks for {count} styles")
    weights = list(blend) if blend is not None else [1.0] * count
    total = float(sum(weights))
    free = None if keep is None else 1.0 - resize_mask(keep, height, width)
    regions: list[Region] = []
    claimed: Optional[torch.Tensor] = None
    for i, m in enumerate(masks):
        if m is None or weights[i] == 0:
            continue
        m = resize_mask(m, height, width)
        claimed = m if claimed is None else torch.maximum(claimed, m)
        regions.append(Region({i: 1.0}, m if free is None else m * free, weights[i] * count / total))
    unmasked = {i: weights[i] for i, m in enumerate(masks) if m is None and weights[i] > 0}
    if unmasked:
        share = float(sum(unmasked.values()))
        rest = None if claimed is None else 1.0 - claimed
        if free is not None:
            rest = free if rest is None else rest * free
        blended = {i: w / share for i, w in unmasked.items()}
        regions += [Region(blended, part) for part in split(rest, apart, height, width)]
    return [r for r in regions if r.mask is None or big_enough(r.mask)]


def big_enough(mask: torch.Tensor) -> bool:
    """Whether a region under ``mask`` covers at least ``MIN_SHARE`` of the output."""
    return float(mask.mean()) >= MIN_SHARE


def split(rest: Optional[torch.Tensor], apart: Optional[torch.Tensor], height: int, width: int
          ) -> list[Optional[torch.Tensor]]:
    """``rest`` (None: everywhere) as one region, or as its parts inside and outside ``apart``."""
    if apart is None:
        return [rest]
    inside = resize_mask(apart.float(), height, width)
    if rest is not None:
        inside = inside * rest
    if not big_enough(inside):  # plan would drop it, leaving its pixels unstyled
        return [rest]
    return [inside, (1.0 - inside) if rest is None else rest - inside]


def compose(free: torch.Tensor, content: torch.Tensor, keep: Optional[torch.Tensor]) -> torch.Tensor:
    """The image the losses see: the content photo under the keep mask, ``free`` elsewhere.

    The optimizer's variable is ``free``; pinning the kept pixels this way (rather than a
    penalty) keeps them exactly, and the stylized pixels next to them are optimized knowing
    them, so there is no seam to hide afterwards. Soft mask edges blend the two.
    """
    if keep is None:
        return free
    return keep * content + (1.0 - keep) * free
