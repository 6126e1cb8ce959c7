"""The objective of one optimization: its named terms, evaluated on the whole image.

An ``Objective`` holds every term a scale (or the scale mixing) optimizes, already weighted:

- ``content.<layer>``: ``ContentTerm``, α·w_l·½Σ(F − P)², a sum over feature positions;
- the style terms, made by the ``--style-loss`` (``nstyle.core.losses``): by default one
  ``style.<layer>`` term per style layer (``LayerTerm``, β·w_l·Σ_regions E_l over the
  objective's style ``regions``: each region's targets and mask, ``nstyle.core.regions``),
  or terms of the loss's own (one term over all style layers at once, say);
- ``tv``: total variation on the pixels;
- ``temporal``: ``TemporalTerm``, a video frame's pixels kept close to the previous
  stylized frame warped to it, where the warp is trusted (``nstyle.tasks.video``).

The terms are named as they are reported (``Progress.losses``, the run record), in this
order, with ``total`` their sum. The whole-image path is ``evaluate``; ``nstyle.core.tiling``
evaluates the same terms tile by tile, from the same formulas (``ContentTerm.value`` on a
tile's core, the style loss's own statistics summed over tiles), so a term is written
once and works tiled. A new term that is a sum over feature positions works tiled as a
``ContentTerm`` does; one on the pixels (as ``tv``) goes in ``pixel_terms``, which both
paths evaluate on the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Mapping, Optional, Sequence

import torch

from nstyle.core import losses
from nstyle.core.image_tensors import fit_size
from nstyle.core.losses import terms as loss_terms
from nstyle.core.losses.base import StyleLoss
from nstyle.core.regions import Region


@dataclass(frozen=True, eq=False)
class ContentTerm:
    """Content at one layer: ``weight`` · ½Σ(F − P)², P the content photo's features."""

    layer: str
    weight: float  # α · w_l · the scale's positions factor
    target: torch.Tensor  # the content's features at ``layer``, whole image

    @property
    def name(self) -> str:
        return f"content.{self.layer}"

    def value(self, features: torch.Tensor, target: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unweighted loss of ``features`` against ``target`` (default: the whole target;
        a tile passes the matching slices of both)."""
        return loss_terms.content_loss(features, self.target if target is None else target)


@dataclass(frozen=True, eq=False)
class TemporalTerm:
    """A video frame's temporal consistency: ``weight`` · Σ mask · (x − target)², on the
    pixels (so the same whole or tiled); ``target`` in the network's input space."""

    weight: float
    target: torch.Tensor  # (1, 3, H, W): the previous output warped to this frame
    mask: torch.Tensor  # (1, 1, H, W) in [0, 1]: where that warp is trusted
    name = "temporal"

    def value(self, image: torch.Tensor) -> torch.Tensor:
        return loss_terms.temporal_loss(image, self.target, self.mask)


@dataclass(frozen=True, eq=False)
class Objective:
    """Every term of one optimization, weighted; see the module docstring."""

    content: tuple[ContentTerm, ...] = ()
    style: tuple = ()  # one style loss's terms (``StyleLoss.terms``)
    regions: tuple[Region, ...] = ()
    tv_weight: float = 0.0  # 0: no tv term
    temporal: Optional[TemporalTerm] = None  # video frames after the first

    @property
    def style_loss(self) -> Optional[StyleLoss]:
        """The style loss whose terms these are (None without style terms)."""
        return self.style[0].loss if self.style else None

    @property
    def rematches(self) -> bool:
        """Whether the style terms' targets are matched to the image each scale starts from
        (``StyleLoss.rematches_per_scale``)."""
        return self.style_loss is not None and self.style_loss.rematches_per_scale

    @property
    def layers(self) -> tuple[str, ...]:
        """The network layers the terms read, content layers first."""
        return tuple(dict.fromkeys([t.layer for t in self.content] +
                                   [layer for t in self.style for layer in t.layers]))

    def pixel_terms(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted terms computed on the pixels alone (the same whole or tiled)."""
        terms: dict[str, torch.Tensor] = {}
        if self.tv_weight > 0:
            terms["tv"] = self.tv_weight * loss_terms.total_variation(image)
        if self.temporal is not None:
            terms[self.temporal.name] = self.temporal.weight * self.temporal.value(image)
        return terms

    def evaluate(self, features: Mapping[str, torch.Tensor], image: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
        """Each weighted term at whole-image ``features`` of ``image``, plus 'total'."""
        terms: dict[str, torch.Tensor] = {}
        for c in self.content:
            terms[c.name] = c.weight * c.value(features[c.layer])
        for s in self.style:
            terms[s.name] = s.weight * s.evaluate(features, self.regions, tuple(image.shape[-2:]))
        terms.update(self.pixel_terms(image))
        return with_total(terms)


def with_total(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``terms`` plus their sum as 'total' (in the terms' order)."""
    terms["total"] = torch.stack(list(terms.values())).sum()
    return terms


#: how fast the content weight grows as an output shrinks below the reference size:
#: (reference positions / output positions) ** this. 1 would only undo the content sum's
#: growth with the positions; measured, that is not enough: the content layer (relu4_2,
#: stride 8) holds less of a small image's scene, and Tübingen x The Starry Night at 128 px
#: kept structure_kept 0.41 with 1 (0.38 before, 0.57 at 512 px) and 0.52 with 2
#: (bench/balance.py, docs/quality.md). The pixel terms (tv, temporal) take 1: with 2 the
#: 128 px result was visibly blurred, for the same structure.
CONTENT_BALANCE_EXPONENT = 2
PIXEL_BALANCE_EXPONENT = 1
#: below this output size (longest side) the boost stays at its value there: measured down
#: to 128 px; extrapolated further, the square weighed a 48 px output's content 12800x and
#: gave back the photo, unstylized
SMALLEST_BALANCED_SIZE = 128


@dataclass(frozen=True)
class Balance:
    """What the content and the pixel terms (tv, temporal) are multiplied by at one scale
    (``balance``)."""

    content: float
    pixels: float


def balance(output_hw: tuple[int, int], scale_hw: tuple[int, int], balance_size: int) -> Balance:
    """The factors of the content and pixel terms (sums over positions) at a scale of
    ``scale_hw`` pixels in a run whose output is ``output_hw``.

    Within a run: output positions / the scale's positions, since the style term (Grams
    divided by M, or a mean over positions) does not grow with the image while these sums
    do, so every scale keeps the output's balance. Across output sizes: an output smaller
    than the reference ``balance_size`` (its longest side; the output's aspect ratio) is
    weighed (reference positions / output positions) ** the exponents above more, so a
    128 px preview keeps about as much of the photo as the 512 px run: before, the same
    weights gave pure texture there. At and above the reference nothing changes (the
    default 512 px output is weighed exactly as before; larger outputs were not measured);
    below ``SMALLEST_BALANCED_SIZE`` it stays at its value there.
    ``balance_size`` 0: no reference, the weights hold at every output size as given."""
    oh, ow = output_hw
    within = oh * ow / (scale_hw[0] * scale_hw[1])
    smaller = 1.0
    if balance_size:
        rw, rh = fit_size(ow, oh, balance_size)
        floor = SMALLEST_BALANCED_SIZE / max(oh, ow)  # > 1: an output below the smallest size
        smaller = max(1.0, rh * rw / (oh * ow) / max(1.0, floor) ** 2)
    return Balance(within * smaller ** CONTENT_BALANCE_EXPONENT, within * smaller ** PIXEL_BALANCE_EXPONENT)


def for_scale(loss, content_targets: Mapping[str, torch.Tensor], style_regions: Sequence[Region],
              positions_factor: float = 1.0, pixels_factor: Optional[float] = None,
              left_out: Collection[str] = ()) -> Objective:
    """The run's objective at one scale, from its ``LossOptions`` and that scale's targets.

    ``positions_factor`` (content) and ``pixels_factor`` (tv; default the same): see
    ``balance``: the content and tv terms are sums over positions while the style term is
    not, so they are multiplied by these to keep the balance the weights set at the
    reference size, at every scale. ``left_out``: layers this scale does not read (the last
    of several: ``left_out_at_last_scale``): content layers always, style layers when the
    style loss can leave a layer out (the others keep their weights, so the network stops
    at the deepest layer still read)."""
    style_loss = losses.get(loss.style_loss)
    alpha = loss.content_weight * positions_factor
    content = tuple(ContentTerm(layer, alpha * w, content_targets[layer])
                    for layer, w in content_weights(loss).items() if layer not in left_out)
    weights = style_weights(loss)
    if style_loss.separable_layers:
        weights = {layer: w for layer, w in weights.items() if layer not in left_out}
    if loss.style_balance:
        weights = balanced_style_weights(weights, style_loss, style_regions, loss.style_balance)
    style = style_loss.terms(weights, loss.style_weight * style_loss.scale)
    pixels_factor = positions_factor if pixels_factor is None else pixels_factor
    tv = loss.tv_weight * pixels_factor if loss.tv_weight > 0 else 0.0
    return Objective(content, style, tuple(style_regions), tv)


def balanced_style_weights(weights: Mapping[str, float], style_loss, regions: Sequence[Region],
                           exponent: float) -> dict[str, float]:
    """``--style-balance``: each layer's weight times (the loss's reference energy / the
    regions' target energy) ** ``exponent`` where the targets' is the lower, else unchanged.

    Why: the style term's pull scales with its target's energy, which spans 10-250x between
    paintings, so at one --style-weight a faint painting (ink on silk) leaves the photo
    nearly as it was while a vivid one repaints it. Only the faint are lifted: the default
    was judged on vivid paintings. The regions' energy is their weight-weighted mean; each
    scale measures its own targets (the painting at that scale's size: within 0.65-1.65x of
    its 512 px energy for three paintings measured)."""
    total = sum(r.weight for r in regions)
    if not regions or total <= 0:
        return dict(weights)
    balanced = {}
    for layer, w in weights.items():
        reference = style_loss.reference_energy.get(layer)
        energy = sum(r.weight * style_loss.energy(r.targets[layer]) for r in regions) / total \
            if reference else 0.0
        lift = reference / energy if energy > 0 else 1.0
        balanced[layer] = w * max(1.0, lift) ** exponent
    return balanced


def left_out_at_last_scale(loss) -> tuple[str, ...]:
    """The layers the last of several scales leaves out (``--coarse-only-layers``, auto
    resolved for the run's style loss)."""
    return loss.last_scale_left_out(losses.get(loss.style_loss).separable_layers)


def content_weights(loss) -> dict[str, float]:
    """{layer: w_l} of the content terms ({} when the content weight is 0)."""
    return loss.layer_weights("content") if loss.content_weight > 0 else {}


def style_weights(loss) -> dict[str, float]:
    """{layer: w_l} of the style terms ({} when the style weight is 0)."""
    return loss.layer_weights("style") if loss.style_weight > 0 else {}


def equal_weights(layers: Sequence[str]) -> dict[str, float]:
    """{layer: 1.0}, a layer named twice counting twice (as ``LossOptions.layer_weights``)."""
    merged: dict[str, float] = {}
    for layer in layers:
        merged[layer] = merged.get(layer, 0.0) + 1.0
    return merged
