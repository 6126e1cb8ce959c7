"""The network of a run and the targets it computes (``TargetMaker``), the style targets
shared across runs and processes (``StyleTargets``), and the decoded weights, loaded once per
process."""

from __future__ import annotations

import collections
import copy
import hashlib
import threading
from typing import Callable, Optional, Sequence

import torch

from nstyle.core import losses, regions, tiles
from nstyle.core.device import resolve_precision
from nstyle.core.image_tensors import check_image_tensor, crop_border, digest, hw, resize_tensor
from nstyle.core.losses import StyleLoss
from nstyle.core.objective import content_weights, style_weights
from nstyle.core.plan import make as make_plan, style_size
from nstyle.core.regions import Region
from nstyle.core.vgg import LAYER_NAMES, VGG19Features, halo_for, last_needed_layer, load_weights, preprocess
from nstyle.errors import BadOption
from nstyle.options.config import Config

#: style targets a Stylizer keeps for later runs (``TargetMaker.style_targets``)
STYLE_CACHE_ENTRIES = 8


class TargetMaker:
    """The network of one ``Config`` (float32, and the loop's bfloat16 copy) and the targets
    it computes: content features and style targets (each style loss's own, blended per
    region, cached for later runs and shared through ``StyleTargets``)."""

    def __init__(self, config: Config, device: torch.device,
                 shared_targets: Optional["StyleTargets"] = None) -> None:
        self.config = config
        self.device = device
        self.content_weights = content_weights(config.loss)
        self.style_weights = style_weights(config.loss)
        self.style_loss = losses.get(config.loss.style_loss)
        self.layers = tuple(dict.fromkeys(list(self.content_weights) + list(self.style_weights)))
        #: targets shared with other runs and processes (``StyleTargets``); None: each
        #: Stylizer computes its own (and keeps its last few, see ``style_targets``)
        self.shared_targets = shared_targets
        self.dtype = resolve_precision(config.model.precision, self.device)
        # channels_last lets oneDNN skip a layout reorder around every conv on the CPU (and
        # lets gram() use the features without a copy); measured in bench/benchmark.py
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.preserve_format
        self._style_cache: collections.OrderedDict[tuple, dict[str, torch.Tensor]] = collections.OrderedDict()
        self.vgg: Optional[VGG19Features] = None
        # the network the optimization loop runs: self.vgg itself, or a bfloat16 copy of it
        # (targets are always computed by self.vgg in float32, once)
        self.loop_vgg: Optional[VGG19Features] = None
        if self.layers:
            self.network_for(self.layers)

    def network_for(self, layers: Sequence[str]) -> None:
        """Makes sure the network runs at least to the deepest of ``layers`` (the scale
        mixing may need deeper ones than the run's own losses)."""
        last = last_needed_layer(list(self.layers) + list(layers))
        if self.vgg is not None and LAYER_NAMES.index(self.vgg.last_layer) >= LAYER_NAMES.index(last):
            return
        model = self.config.model
        self.vgg = VGG19Features(last, model.pooling, weights=cached_weights(),
                                 padding=model.padding).to(self.device)
        if self.device.type == "cpu":
            self.vgg.to(memory_format=self.memory_format)
        self.loop_vgg = self.vgg
        if self.dtype != torch.float32:
            self.loop_vgg = copy.deepcopy(self.vgg).to(self.dtype)

    # ---- targets ---------------------------------------------------------------------

    def features(self, image_bgr: torch.Tensor, layers, loop: bool = False) -> dict[str, torch.Tensor]:
        """Activations of ``layers``; ``loop``: in the loop's precision, else in float32."""
        if not layers:
            return {}
        assert self.vgg is not None and self.loop_vgg is not None
        vgg = self.loop_vgg if loop else self.vgg
        return vgg(image_bgr.to(self.dtype if loop else torch.float32,
                                memory_format=self.memory_format), layers)

    @torch.no_grad()
    def targets(self, image_bgr: torch.Tensor, layer_weights, tile: int, style_loss: StyleLoss) -> dict:
        """``style_loss``'s targets of one image (tile by tile when ``tile``) at the layers
        of ``layer_weights`` ({layer: weight})."""
        if tile:
            h, w = image_bgr.shape[-2:]
            cover = tiles.make_tiles(h, w, tile, halo_for(list(layer_weights)))
            return style_loss.tiled_targets(self.vgg, image_bgr, list(layer_weights), cover)
        return style_loss.targets(self.features(image_bgr, list(layer_weights)), layer_weights,
                                  tuple(image_bgr.shape[-2:]))

    @torch.no_grad()
    def style_targets(self, style: torch.Tensor, size: int, tile: int = 0) -> dict[str, torch.Tensor]:
        """Gram/M per style layer of one style image (RGB (1, 3, h, w) in [0, 1]), resized
        to ``style_scale`` times ``size``: the targets of a scale of that size.

        The last ``STYLE_CACHE_ENTRIES`` results are kept, keyed by the image's pixels, so
        runs of one Stylizer that share a style (a batch of contents) compute its targets
        once; with ``shared_targets`` they are also looked up there (and added), so other
        Stylizers and processes reuse them. The tensors returned are shared: do not change
        them in place."""
        key = (digest(style), size, tile)
        if key in self._style_cache:
            self._style_cache.move_to_end(key)
            return self._style_cache[key]
        # resized first, then cropped: the painting's strokes keep the size --style-scale gives
        resized = resize_tensor(style.float(), style_size(self.config, size))
        x = preprocess(crop_border(resized, self.config.image.style_margin).to(self.device))
        grams = self._style_cache[key] = self._shared_or_computed(x, tile)
        while len(self._style_cache) > STYLE_CACHE_ENTRIES:
            self._style_cache.popitem(last=False)
        return grams

    def _shared_or_computed(self, x: torch.Tensor, tile: int) -> dict[str, torch.Tensor]:
        if self.shared_targets is None:
            return self.targets(x, self.style_weights, tile, self.style_loss)
        key = self.shared_targets.key(x, tile, self.config, list(self.style_weights))
        grams = self.shared_targets.get(key, self.device)
        if grams is None:
            grams = self.targets(x, self.style_weights, tile, self.style_loss)
            self.shared_targets.put(key, grams)
        return grams

    @torch.no_grad()
    def style_regions(self, styles: Sequence[torch.Tensor], masks: Sequence[Optional[torch.Tensor]],
                      keep: Optional[torch.Tensor], size: int, height: int, width: int,
                      tile: int = 0, apart: Optional[torch.Tensor] = None) -> list[Region]:
        """The style regions at one scale (output of height x width), with their Gram targets
        (``apart``: see ``regions.plan``)."""
        if not self.style_weights:
            return []
        blend = self.config.image.style_blend_weights
        if blend is not None and len(blend) != len(styles):
            raise BadOption(f"style_blend_weights has {len(blend)} weights for {len(styles)} style "
                            "images: give one weight per style image, in order")
        planned = regions.plan(len(styles), masks, blend, keep, height, width, apart)
        return self.with_targets(planned, lambda i: self.style_targets(styles[i], size, tile),
                                  list(self.style_weights), self.style_loss)

    def with_targets(self, planned: list[Region], targets_of: Callable[[int], dict[str, torch.Tensor]],
                      layers: list[str], style_loss: StyleLoss) -> list[Region]:
        """Fills each region's targets (its styles' targets, blended by ``style_loss``) and
        layer masks."""
        made: dict[int, dict[str, torch.Tensor]] = {}
        for region in planned:
            for i in region.styles:
                if i not in made:
                    made[i] = targets_of(i)
            first = made[next(iter(region.styles))]
            region.targets = {key: style_loss.blend([(w, made[i][key]) for i, w in region.styles.items()])
                              for key in first}
            if region.mask is not None:
                region.mask = region.mask.to(self.device)
            region.at_layers(layers)
        return planned

    def prepare_style_targets(self, styles: Sequence[torch.Tensor]) -> int:
        """Computes ``styles``' Gram targets for every scale of this config into
        ``self.shared_targets``, ahead of the runs that share them; returns how many
        (style, scale) targets it holds for them. Tiles are planned for a square content at
        the output size (the largest); a content whose plan tiles otherwise, or colours
        that match each style to its content (preserve_colors luminance or histogram),
        make targets that a run then computes for itself."""
        if self.shared_targets is None or not self.style_weights:
            return 0
        if self.config.color.preserve_colors in ("luminance", "histogram"):
            return 0  # the styles the loop sees depend on each content
        side = self.config.output_size
        plans = [s.to_dict() for s in make_plan(self.config, (side, side), [hw(s) for s in styles],
                                                None, self.device).scales]
        for p in plans:
            for style in styles:
                check_image_tensor(style, "style image")
                self.style_targets(style, p["size"], p["tile"])
        return len(plans) * len(styles)

    @torch.no_grad()
    def content_targets(self, content_bgr: torch.Tensor, tile: int = 0,
                        left_out: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        """The photo's features at the content layers, but those ``left_out`` (a last scale's
        coarse-only ones: the network need not go that deep for them)."""
        layers = [layer for layer in self.content_weights if layer not in left_out]
        if not layers:
            return {}
        if tile:
            h, w = content_bgr.shape[-2:]
            cover = tiles.make_tiles(h, w, tile, halo_for(layers))
            return tiles.features(self.vgg, content_bgr, layers, cover)
        return {k: v.detach() for k, v in self.features(content_bgr, layers).items()}


class StyleTargets:
    """Style Gram targets kept for reuse across Stylizers and processes: a style used with
    many contents (a batch, a cluster) goes through VGG once per scale, not once per run.

    Keyed by exactly what determines them (the style image as resized for the scale, the
    tile, the style layers and the network's pooling and padding), so a hit is always
    the target a run would compute itself. Kept on the CPU and picklable: one filled in a
    parent process can be handed to worker processes or Ray tasks. ``hits`` and
    ``misses`` count lookups. Not thread-safe for writers; share it between threads only
    once it is filled."""

    def __init__(self) -> None:
        self._grams: dict[tuple, dict[str, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._grams)

    @staticmethod
    def key(style_bgr: torch.Tensor, tile: int, config: Config, layers: list[str]) -> tuple:
        pixels = style_bgr.detach().float().cpu().contiguous().numpy()
        digest = hashlib.blake2b(pixels.tobytes(), digest_size=16).hexdigest()
        return (digest, tuple(pixels.shape), tile, tuple(layers), config.model.pooling,
                config.model.padding, config.loss.style_loss)

    def get(self, key: tuple, device: torch.device) -> Optional[dict[str, torch.Tensor]]:
        grams = self._grams.get(key)
        if grams is None:
            self.misses += 1
            return None
        self.hits += 1
        return {layer: g.to(device) for layer, g in grams.items()}

    def put(self, key: tuple, grams: dict[str, torch.Tensor]) -> None:
        self._grams[key] = {layer: g.detach().cpu() for layer, g in grams.items()}


_WEIGHTS: Optional[dict[str, torch.Tensor]] = None
_WEIGHTS_LOCK = threading.Lock()


def cached_weights() -> dict[str, torch.Tensor]:
    """Decoded VGG weights, loaded once per process (the service builds many Stylizers)."""
    global _WEIGHTS
    with _WEIGHTS_LOCK:
        if _WEIGHTS is None:
            _WEIGHTS = load_weights()
        return _WEIGHTS
