"""What a style loss is: the ``StyleLoss`` interface every ``--style-loss`` implements.

A style loss says, in one module, everything the rest of the engine needs to know about it:

- ``targets`` / ``tiled_targets``: what it keeps of one style image (a Gram matrix per
  layer, moments, a bank of hypercolumns), from its features or tile by tile;
- ``blend``: how several styles' targets make one region's target;
- ``terms``: the objective's style terms for a set of layer weights (``LayerTerm`` per
  layer, or a term of its own over all layers at once), and ``scale``, its factor besides β;
- ``rematches_per_scale``: whether its targets are matched again to the image each scale
  starts from (the terms' ``matched``), and ``restarts_on_rise``: whether L-BFGS restarts
  from the best image when its loss rises;
- ``separable_layers``: whether a layer can be left out at one scale (``--coarse-only-layers``);
- ``reference_energy`` and ``energy``: how strong a painting's target is against a
  typical painting's, for ``--style-balance`` (empty: the loss refuses that option);
- ``tiles``: whether it can run tile by tile (``tiled_style_pass`` and ``tile_surrogate``
  are then its two halves of ``nstyle.core.tiling``), else ``untiled_reason``;
- ``extra_bytes``: the memory it needs beyond the network's, for the plan.

Nothing outside this package names a loss: the engine asks ``nstyle.core.losses.get``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Optional, Sequence

import torch

from nstyle.errors import BadOption


class StyleLoss:
    """One ``--style-loss``; subclasses set the class attributes and override the methods
    their capabilities need. Instances hold no state: one per process, in the registry."""

    #: the option's value (``--style-loss NAME``)
    name: ClassVar[str]
    #: multiplies β, so that one --style-weight gives a similar balance with the content
    #: for every loss (chosen by ablation, docs/quality.md)
    scale: ClassVar[float] = 1.0
    #: whether the loss can be computed tile by tile (exactly, see ``nstyle.core.tiling``)
    tiles: ClassVar[bool] = True
    #: why it cannot run tiled (one line, for every front end), when ``tiles`` is False
    untiled_reason: ClassVar[str] = ""
    #: whether its terms' targets are matched to the image each scale starts from
    rematches_per_scale: ClassVar[bool] = False
    #: whether L-BFGS restarts from the best image when this loss climbs (``optimizer``)
    restarts_on_rise: ClassVar[bool] = False
    #: whether a style layer can be left out of its terms at one scale while its targets
    #: keep every layer (``--coarse-only-layers``): true for one term per layer
    separable_layers: ClassVar[bool] = True
    #: {layer: a typical painting's target energy} for ``--style-balance`` (``energy``);
    #: empty: the loss has no such measure and refuses the option
    reference_energy: ClassVar[Mapping[str, float]] = {}

    # ---- options ---------------------------------------------------------------------

    def check(self, tile_size: Optional[int], coarse_only_layers: Sequence[str] = (),
              style_balance: float = 0.0) -> None:
        """Raises ``BadOption`` for options this loss cannot run with (before any work)."""
        if tile_size and not self.tiles:
            raise BadOption(self.untiled_reason)
        if style_balance and not self.reference_energy:
            raise BadOption(f"style_balance cannot be used with style_loss {self.name}: it measures "
                            "a painting's strength by its Gram matrices (style_loss gram)")
        if coarse_only_layers and not self.separable_layers:
            raise BadOption(f"coarse_only_layers cannot be used with style_loss {self.name}: its "
                            "targets are matched on every style layer at once")

    # ---- targets ---------------------------------------------------------------------

    def targets(self, features: Mapping[str, torch.Tensor], layer_weights: Mapping[str, float],
                image_hw: tuple[int, int]) -> dict[str, Any]:
        """The targets of one style image from its whole-image ``features`` (of the layers
        of ``layer_weights``), keyed as the terms read them from ``Region.targets``."""
        raise NotImplementedError

    def tiled_targets(self, vgg, image: torch.Tensor, layers: Sequence[str], tiles) -> dict[str, Any]:
        """As ``targets``, computed tile by tile (``nstyle.core.tiles``)."""
        raise BadOption(self.untiled_reason)

    def blend(self, parts: Sequence[tuple[float, Any]]) -> Any:
        """One region's target from its styles' (weight, target) pairs: the weighted sum,
        in order (every target type here supports ``* w`` and ``+``)."""
        total = None
        for weight, target in parts:
            weighted = target * weight
            total = weighted if total is None else total + weighted
        return total

    def energy(self, target: Any) -> float:
        """One layer's target energy, comparable with ``reference_energy`` (``--style-balance``)."""
        raise NotImplementedError

    # ---- the objective ---------------------------------------------------------------

    def terms(self, layer_weights: Mapping[str, float], beta: float) -> tuple:
        """The style terms of an objective: by default one ``LayerTerm`` per layer,
        weighted β·w_l (β already includes ``scale``)."""
        return tuple(LayerTerm(layer, beta * w, self) for layer, w in layer_weights.items())

    def region_loss(self, region, layer: str, features: torch.Tensor) -> torch.Tensor:
        """A region's weighted loss E_l at ``layer`` of whole-image ``features`` (before the
        layer weight and β), for ``LayerTerm``."""
        raise NotImplementedError

    # ---- tiles -----------------------------------------------------------------------

    def tiled_style_pass(self, vgg, image: torch.Tensor, tiles, objective, masks
                         ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
        """Pass 1 of a tiled evaluation: the weighted style terms, and per region and layer
        the fixed factor that ``tile_surrogate`` turns into the exact gradient."""
        raise BadOption(self.untiled_reason)

    def tile_surrogate(self, surrogate: torch.Tensor, factor: Any, flat: torch.Tensor,
                       mask_core: Optional[torch.Tensor]) -> torch.Tensor:
        """Pass 2: ``surrogate`` plus this loss's surrogate on one tile core's features
        ``flat`` (B, N, positions) with the mask there (None: unmasked)."""
        raise BadOption(self.untiled_reason)

    # ---- memory ----------------------------------------------------------------------

    def extra_bytes(self, height: int, width: int, layers: Sequence[str],
                    style_hw: tuple[int, int]) -> int:
        """Bytes this loss needs beyond the network's at an output of height x width."""
        return 0


@dataclass(frozen=True, eq=False)
class LayerTerm:
    """Style at one layer: ``weight`` · Σ over the objective's regions of ``loss``'s E_l."""

    layer: str
    weight: float  # β · w_l
    loss: StyleLoss

    @property
    def name(self) -> str:
        return f"style.{self.layer}"

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    def value(self, features: torch.Tensor, style_regions: Sequence) -> torch.Tensor:
        """Unweighted loss of whole-image ``features`` (no region: zero, all is kept)."""
        return sum((self.loss.region_loss(r, self.layer, features) for r in style_regions),
                   features.new_zeros((), dtype=torch.float32))

    def evaluate(self, features: Mapping[str, torch.Tensor], style_regions: Sequence,
                 image_hw: tuple[int, int]) -> torch.Tensor:
        """``value`` at this term's layer of a whole image's ``features``."""
        return self.value(features[self.layer], style_regions)

    def matched(self, features: Mapping[str, torch.Tensor], image_hw: tuple[int, int],
                style_regions: Sequence) -> "LayerTerm":
        """Fixed targets: the term itself (see ``StyleLoss.rematches_per_scale``)."""
        return self
