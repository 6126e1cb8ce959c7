"""The optimization loop: the image is the only variable.

``Stylizer(config).run(content, styles)`` takes RGB tensors in [0, 1] (any size; they are
resized here, so every front end gets the same sizing) and returns a ``Result``. It follows
a ``Plan`` (``nstyle.core.plan``: scales, iterations, tiles, memory), which ``Stylizer.plan``
computes before any work, for a front end to read and pass back to ``run``. Each step of
the plan minimizes an ``Objective`` (``nstyle.core.objective``: the named loss terms), on the
whole image or tile by tile (``nstyle.core.tiling``). Progress is reported through a callback
that receives a ``Progress`` event after every iteration; the callback can end the run
early with ``event.stop()`` (the current image is returned), and a ``CancelToken`` aborts
it from another thread (``Cancelled`` is raised). The engine never prints, never touches
files and never exits.

Departures from the paper, on purpose:
- The image is optimized in VGG's input space (BGR, 0..255, mean-subtracted), as the Caffe
  weights expect, and is clamped to the valid pixel range after every step (a projected
  L-BFGS). Unconstrained, the iterate drifts outside 0..255 and the image actually written
  (clamped) has a loss many times the optimizer's own (15x at 256 px after 80
  iterations, bench/benchmark.py); clamped, the loss reported is the output's.
- Gram matrices are divided by the number of positions M (see ``losses.gram``) so a style
  image may have a different size than the output; with equal sizes the loss is the paper's.

The perceptual controls of Gatys et al. (CVPR 2017) live in their own modules and are only
orchestrated here: colour (``color``: what the optimization sees, and the finishing step),
space (``regions``: guided Gram matrices per style region, the keep mask) and scale (the
coarse-to-fine schedule of the plan, scale mixing in ``mix_scales``); ``tiling`` bounds
memory for large outputs without changing the result.

With ``precision`` bf16 the network runs in bfloat16 inside the optimization loop (the
targets are computed once in float32); losses and Grams accumulate in float32. See
docs/benchmark.md for what this buys and what it costs in loss.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from nstyle.core import color, losses, regions, tiles, tiling
from nstyle.core.losses import GRAM, LayerTerm, StyleLoss
from nstyle.options.config import Config
from nstyle.errors import BadOption, Cancelled, OutOfMemory, RunFailed
from nstyle.io.images import fit_size, to_pil
from nstyle.core.objective import (Objective, TemporalTerm, content_weights, equal_weights,
                        for_scale, style_weights, with_total)
from nstyle.core.plan import Plan, ScalePlan, make as make_plan, mix_step, style_size
from nstyle.core.regions import Region
from nstyle.core.vgg import (LAYER_NAMES, VGG19Features, deprocess, halo_for, last_needed_layer, load_weights,
                  preprocess)

BUILTIN_INITS = ("content", "noise", "gray")
#: style targets a Stylizer keeps for later runs (``Stylizer.style_targets``)
STYLE_CACHE_ENTRIES = 8
#: steps averaged when deciding that the image has stopped changing (``tolerance``):
#: single L-BFGS steps vary too much in length to judge by one
SETTLE_WINDOW = 5


class CancelToken:
    """Thread-safe flag a front end sets to abort a run; checked once per iteration."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True, eq=False, kw_only=True)
class Progress:
    """One iteration's report: an immutable value, valid after the callback returns.

    ``losses`` holds each term's weighted contribution to ``total`` (named as in
    ``nstyle.core.objective``: content.<layer>, style.<layer>, tv). ``image`` is the image being
    optimized, RGB (1, 3, H, W) in [0, 1] at this scale's size, on the run's device: a
    detached copy of its own (before the colour finishing of --preserve-colors luminance or
    swap; ``preview()`` applies it).
    """

    iteration: int  # counted over the whole run: every scale (and scale mixing) in turn
    iterations: int  # the plan's total (``Plan.total_iterations``)
    losses: dict[str, float]
    elapsed: float  # seconds since the run started
    image: torch.Tensor = field(repr=False)
    scale: int = 1  # which scale of the coarse-to-fine schedule (1-based) ...
    scales: int = 1  # ... of how many
    size: int = 0  # that scale's longest side in pixels
    phase: str = "stylize"  # or "mix": synthesizing the --fine-style/--coarse-style image
    #: asks the run to end after this iteration
    _stop: Optional[Callable[[], None]] = field(default=None, repr=False)
    #: turns ``image`` into what the user will get (colour finishing)
    _render: Optional[Callable[[torch.Tensor], torch.Tensor]] = field(default=None, repr=False)

    @property
    def total(self) -> float:
        return self.losses["total"]

    @property
    def eta(self) -> float:
        """Seconds left, extrapolated from the mean time per iteration so far."""
        return self.elapsed / self.iteration * (self.iterations - self.iteration)

    def preview(self) -> "Image.Image":  # noqa: F821 - PIL type, imported lazily
        """The current image as the user would get it, an RGB PIL image."""
        rgb = self.image.clamp(0, 1)
        return to_pil(self._render(rgb) if self._render is not None else rgb)

    def stop(self) -> None:
        """End the run after this iteration; ``run`` returns the current image."""
        if self._stop is not None:
            self._stop()


@dataclass(frozen=True, eq=False)
class TemporalTarget:
    """What a video frame's pixels are kept close to (``nstyle.tasks.video``): ``image`` the
    previous stylized frame warped to this one, RGB (1, 3, H, W) in [0, 1], as the
    optimization sees colours (gray under --preserve-colors luminance); ``mask`` (1, 1, H, W)
    in [0, 1], where that warp is trusted; ``weight`` the term's weight at the output size
    (a sum over pixels, like tv: coarser scales get it times their positions factor)."""

    image: torch.Tensor
    mask: torch.Tensor
    weight: float


@dataclass
class Result:
    image: torch.Tensor  # (1, 3, H, W) RGB in [0, 1], on the CPU
    losses: dict[str, float]  # final contributions per term, plus 'total'
    iterations: int  # iterations actually run
    stopped_early: bool
    device: str
    timings: dict[str, float]
    #: the plan the run followed, with the iterations each step ran (``to_dict`` for JSON)
    plan: Optional[Plan] = None
    precision: str = "fp32"  # what the loop ran in ('auto' resolved)

    def to_pil(self) -> "Image.Image":  # noqa: F821
        return to_pil(self.image)


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise BadOption("device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    if name == "mps" and not mps:
        raise BadOption("device mps was asked for, but it is not available here; use --device cpu")
    return torch.device(name)


def _cpu_has_bf16() -> bool:
    """True where oneDNN has native bfloat16 matrix units (AMX or AVX512-BF16) to use."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The loop's dtype for ``precision`` 'auto', 'fp32' or 'bf16' on ``device``."""
    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and _cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def resize_tensor(image: torch.Tensor, longest: int) -> torch.Tensor:
    """Resize an RGB batch so its longest side is ``longest`` (antialiased), values kept in [0, 1]."""
    h, w = image.shape[-2:]
    new_w, new_h = fit_size(w, h, longest)
    if (new_h, new_w) == (h, w):
        return image
    out = F.interpolate(image, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    return out.clamp(0.0, 1.0)


def _check_image_tensor(t: torch.Tensor, what: str) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[:2] != (1, 3):
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise BadOption(f"{what}: expected a tensor of shape (1, 3, H, W) in [0, 1], got {shape}")
    if min(t.shape[-2:]) < 1:
        raise BadOption(f"{what} has no pixels")


def _check_temporal(temporal: Optional[TemporalTarget]) -> None:
    if temporal is None:
        return
    _check_image_tensor(temporal.image, "temporal target")
    m = temporal.mask
    if not isinstance(m, torch.Tensor) or m.ndim != 4 or m.shape[:2] != (1, 1) \
            or m.shape[-2:] != temporal.image.shape[-2:]:
        raise BadOption("temporal mask: expected a tensor of shape (1, 1, H, W) in [0, 1], the "
                        "size of its image")
    if not (isinstance(temporal.weight, (int, float)) and math.isfinite(temporal.weight)
            and temporal.weight >= 0):
        raise BadOption(f"temporal weight must be a finite number >= 0, got {temporal.weight!r}")


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or \
        "out of memory" in text or "not enough memory" in text or "can't allocate memory" in text


@dataclass
class _Events:
    """Iteration counting and stop requests shared by every step of one run."""

    callback: Optional[Callable[[Progress], None]]
    cancel: Optional[CancelToken]
    total: int
    t0: float
    done: int = 0
    stopped: bool = False

    def request_stop(self) -> None:
        self.stopped = True


@dataclass
class _Step:
    """One optimization of the plan (a scale, or the scale mixing), ready to run."""

    plan: ScalePlan
    objective: Objective
    content_bgr: torch.Tensor  # the photo at this size: pinned under ``keep``
    keep: Optional[torch.Tensor]  # (1, 1, H, W) keep mask at this size
    tiles: list[tiles.Tile]  # empty: the whole image at once
    tolerance: float  # see ``Stylizer._settled``
    phase: str = "stylize"
    index: int = 1  # which scale, of ``count``
    count: int = 1
    render: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # for previews


#: how far (relative) the loss may rise above its best before L-BFGS restarts from there
#: (``_restarts_on_rise``: later video frames, and style losses that ask for it)
RISE_TO_RESTART = 1e-3


def _restarts_on_rise(step: _Step, optimizer: torch.optim.Optimizer) -> bool:
    """L-BFGS without a line search, projected by the clamp, can climb away from a good
    image. Seen twice: on a zooming clip the temporal term (stiff, and fighting the style
    term over the blur the warp leaves) made later frames' loss rise after 15 iterations
    and the images turn to noise by the fourth frame (bench/video.py, docs/video.md); and
    a style loss climbed into rainbow noise (``StyleLoss.restarts_on_rise``, which says
    where). The other losses keep the plain optimizer their judged defaults were chosen
    with."""
    if not isinstance(optimizer, torch.optim.LBFGS):
        return False
    objective = step.objective
    return objective.temporal is not None or (objective.style_loss is not None
                                              and objective.style_loss.restarts_on_rise)


class _BestIterate:
    """The lowest-loss image seen by one L-BFGS optimization, and a restart from it.

    Called in the closure, before L-BFGS reads its history: when the loss has risen above
    the best, the image and its gradient go back to the best's and the history is
    dropped, so the step is taken afresh from there (a gradient step, then the curvature
    is learnt again). Costs no extra evaluation: the best's gradient is kept."""

    def __init__(self) -> None:
        self.loss = math.inf  # as the optimizer sees it (scaled, see ``Stylizer._closure``)
        self.restarts = 0

    @property
    def total(self) -> float:
        """The best image's total loss, unscaled."""
        return float(self.terms["total"]) if self.loss < math.inf else math.inf

    def check(self, x: torch.Tensor, loss: torch.Tensor, terms: dict[str, torch.Tensor],
              optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        value = float(loss)
        if value > self.loss * (1 + RISE_TO_RESTART):
            with torch.no_grad():
                x.copy_(self.x)
                x.grad.copy_(self.grad)
            # torch's LBFGS keeps all its state under its one parameter; step() counts from
            # these two and takes the first, history-free branch at n_iter 1
            state = optimizer.state[x]
            state.clear()
            state.update(func_evals=0, n_iter=0)
            self.restarts += 1
            return self.best_loss, self.terms
        if value < self.loss:
            self.loss, self.best_loss, self.terms = value, loss, terms
            self.x, self.grad = x.detach().clone(), x.grad.detach().clone()
        return loss, terms


class Stylizer:
    """Runs Gatys et al.'s optimization for one ``Config``; reusable across runs."""

    def __init__(self, config: Config, device: Optional[torch.device] = None,
                 style_targets: Optional["StyleTargets"] = None) -> None:
        self.config = config
        self.device = device or resolve_device(config.model.device)
        self.content_weights = content_weights(config.loss)
        self.style_weights = style_weights(config.loss)
        self.style_loss = losses.get(config.loss.style_loss)
        self.layers = tuple(dict.fromkeys(list(self.content_weights) + list(self.style_weights)))
        #: Gram targets shared with other runs and processes (``StyleTargets``); None: each
        #: Stylizer computes its own (and keeps its last few, see ``style_targets``)
        self.shared_targets = style_targets
        self.dtype = resolve_precision(config.model.precision, self.device)
        self.precision = "bf16" if self.dtype == torch.bfloat16 else "fp32"
        # channels_last lets oneDNN skip a layout reorder around every conv on the CPU (and
        # lets gram() use the features without a copy); measured in bench/benchmark.py
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.preserve_format
        self._style_cache: collections.OrderedDict[tuple, dict[str, torch.Tensor]] = collections.OrderedDict()
        self.vgg: Optional[VGG19Features] = None
        # the network the optimization loop runs: self.vgg itself, or a bfloat16 copy of it
        # (targets are always computed by self.vgg in float32, once)
        self.loop_vgg: Optional[VGG19Features] = None
        if self.layers:
            self._network_for(self.layers)

    def _network_for(self, layers: Sequence[str]) -> None:
        """Makes sure the network runs at least to the deepest of ``layers`` (the scale
        mixing may need deeper ones than the run's own losses)."""
        last = last_needed_layer(list(self.layers) + list(layers))
        if self.vgg is not None and LAYER_NAMES.index(self.vgg.last_layer) >= LAYER_NAMES.index(last):
            return
        model = self.config.model
        self.vgg = VGG19Features(last, model.pooling, weights=_cached_weights(),
                                 padding=model.padding).to(self.device)
        if self.device.type == "cpu":
            self.vgg.to(memory_format=self.memory_format)
        self.loop_vgg = self.vgg
        if self.dtype != torch.float32:
            self.loop_vgg = copy.deepcopy(self.vgg).to(self.dtype)

    # ---- targets ---------------------------------------------------------------------

    def _features(self, image_bgr: torch.Tensor, layers, loop: bool = False) -> dict[str, torch.Tensor]:
        """Activations of ``layers``; ``loop``: in the loop's precision, else in float32."""
        if not layers:
            return {}
        assert self.vgg is not None and self.loop_vgg is not None
        vgg = self.loop_vgg if loop else self.vgg
        return vgg(image_bgr.to(self.dtype if loop else torch.float32,
                                memory_format=self.memory_format), layers)

    @torch.no_grad()
    def _targets(self, image_bgr: torch.Tensor, layer_weights, tile: int, style_loss: StyleLoss) -> dict:
        """``style_loss``'s targets of one image (tile by tile when ``tile``) at the layers
        of ``layer_weights`` ({layer: weight})."""
        if tile:
            h, w = image_bgr.shape[-2:]
            cover = tiles.make_tiles(h, w, tile, halo_for(list(layer_weights)))
            return style_loss.tiled_targets(self.vgg, image_bgr, list(layer_weights), cover)
        return style_loss.targets(self._features(image_bgr, list(layer_weights)), layer_weights,
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
        key = (_digest(style), size, tile)
        if key in self._style_cache:
            self._style_cache.move_to_end(key)
            return self._style_cache[key]
        x = preprocess(resize_tensor(style.float(), style_size(self.config, size)).to(self.device))
        grams = self._style_cache[key] = self._shared_or_computed_grams(x, tile)
        while len(self._style_cache) > STYLE_CACHE_ENTRIES:
            self._style_cache.popitem(last=False)
        return grams

    def _shared_or_computed_grams(self, x: torch.Tensor, tile: int) -> dict[str, torch.Tensor]:
        if self.shared_targets is None:
            return self._targets(x, self.style_weights, tile, self.style_loss)
        key = self.shared_targets.key(x, tile, self.config, list(self.style_weights))
        grams = self.shared_targets.get(key, self.device)
        if grams is None:
            grams = self._targets(x, self.style_weights, tile, self.style_loss)
            self.shared_targets.put(key, grams)
        return grams

    @torch.no_grad()
    def style_regions(self, styles: Sequence[torch.Tensor], masks: Sequence[Optional[torch.Tensor]],
                      keep: Optional[torch.Tensor], size: int, height: int, width: int,
                      tile: int = 0) -> list[Region]:
        """The style regions at one scale (output of height x width), with their Gram targets."""
        if not self.style_weights:
            return []
        blend = self.config.image.style_blend_weights
        if blend is not None and len(blend) != len(styles):
            raise BadOption(f"style_blend_weights has {len(blend)} values for {len(styles)} style images")
        planned = regions.plan(len(styles), masks, blend, keep, height, width)
        return self._with_targets(planned, lambda i: self.style_targets(styles[i], size, tile),
                                  list(self.style_weights), self.style_loss)

    def _with_targets(self, planned: list[Region], targets_of: Callable[[int], dict[str, torch.Tensor]],
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
        plans = self.memory_plan((side, side), [tuple(s.shape[-2:]) for s in styles])
        for p in plans:
            for style in styles:
                _check_image_tensor(style, "style image")
                self.style_targets(style, p["size"], p["tile"])
        return len(plans) * len(styles)

    @torch.no_grad()
    def content_targets(self, content_bgr: torch.Tensor, tile: int = 0) -> dict[str, torch.Tensor]:
        if tile and self.content_weights:
            h, w = content_bgr.shape[-2:]
            cover = tiles.make_tiles(h, w, tile, halo_for(list(self.content_weights)))
            return tiles.features(self.vgg, content_bgr, list(self.content_weights), cover)
        return {k: v.detach() for k, v in self._features(content_bgr, self.content_weights).items()}

    # ---- the plan --------------------------------------------------------------------

    def plan(self, content: torch.Tensor, styles: Sequence[torch.Tensor] = (), *,
             fine_style: Optional[torch.Tensor] = None,
             coarse_style: Optional[torch.Tensor] = None) -> Plan:
        """The plan ``run`` follows for these images (only their sizes matter): scales,
        iterations, tiles and estimated memory. Raises ``TooLarge`` when a step cannot fit
        in ``memory_limit`` (default: the memory available now) even tiled."""
        style_hws = [_hw(s) for s in styles] + ([_hw(coarse_style)] if coarse_style is not None else [])
        mix_hws = None if fine_style is None or coarse_style is None else (_hw(fine_style), _hw(coarse_style))
        return make_plan(self.config, _hw(content), style_hws, mix_hws, self.device)

    def memory_plan(self, content_hw: tuple[int, int], style_hws: Sequence[tuple[int, int]] = ()
                    ) -> list[dict]:
        """Per scale, the dict form of the plan's ``ScalePlan`` (size, width, height,
        iterations, tile, estimated_peak_gib); see ``plan``."""
        return [s.to_dict() for s in make_plan(self.config, content_hw, style_hws, None, self.device).scales]

    def _check_plan(self, plan: Plan, content: torch.Tensor, mixing: bool) -> None:
        cw, ch = fit_size(content.shape[-1], content.shape[-2], self.config.output_size)
        if ((plan.output.width, plan.output.height) != (cw, ch) or plan.mixed_styles != mixing
                or tuple(s.size for s in plan.scales) != self.config.scale_sizes):
            raise BadOption("the plan given to run was made for other images or options; "
                            "make it with this Stylizer's plan() for these images")

    # ---- the run ---------------------------------------------------------------------

    def initial_image(self, content_bgr: torch.Tensor, init_image: Optional[torch.Tensor]) -> torch.Tensor:
        init = self.config.image.init
        if init_image is not None:
            _check_image_tensor(init_image, "init image")
            h, w = content_bgr.shape[-2:]
            init_image = F.interpolate(init_image.float(), size=(h, w), mode="bicubic",
                                       antialias=True, align_corners=False).clamp(0, 1)
            # contiguous: L-BFGS views the gradient flat, which an image built channels-last
            # (e.g. from an HxWx3 array) would not allow
            return preprocess(init_image.to(self.device)).contiguous()
        if init == "content":
            return content_bgr.clone()
        if init == "gray":  # the ImageNet mean colour: zero in VGG's input space
            return torch.zeros_like(content_bgr)
        if init == "noise":  # white noise over the full pixel range, as in the paper
            gen = torch.Generator().manual_seed(self.config.image.seed)
            noise = torch.rand(content_bgr.shape, generator=gen)
            return preprocess(noise).to(self.device)
        raise BadOption(f"init {init!r} is a path: load it and pass it as init_image")

    def _make_optimizer(self, x: torch.Tensor) -> torch.optim.Optimizer:
        o = self.config.optim
        lr = o.learning_rate
        if o.optimizer == "lbfgs":
            # one iteration per step() so that events, stop and cancel work per iteration;
            # the optimizer's state (history) persists across steps
            return torch.optim.LBFGS([x], lr=lr, max_iter=1, history_size=o.history_size,
                                     tolerance_grad=0.0, tolerance_change=0.0)
        if o.optimizer == "adam":
            return torch.optim.Adam([x], lr=lr, betas=(o.beta1, o.beta2), eps=o.eps)
        if o.optimizer == "adagrad":
            return torch.optim.Adagrad([x], lr=lr, eps=o.eps)
        return torch.optim.SGD([x], lr=lr, momentum=0.9)

    def run(self, content: torch.Tensor, styles: Sequence[torch.Tensor] = (), *,
            init_image: Optional[torch.Tensor] = None,
            style_masks: Optional[Sequence[Optional[torch.Tensor]]] = None,
            keep_mask: Optional[torch.Tensor] = None,
            fine_style: Optional[torch.Tensor] = None,
            coarse_style: Optional[torch.Tensor] = None,
            callback: Optional[Callable[[Progress], None]] = None,
            cancel: Optional[CancelToken] = None,
            plan: Optional[Plan] = None,
            temporal: Optional[TemporalTarget] = None) -> Result:
        """Optimize an image with ``content``'s content and ``styles``' style.

        content: (1, 3, H, W) RGB in [0, 1], any size: it is resized so its longest side is
        the output size (``config.output_size``). styles: such tensors, resized to
        ``style_scale`` times each scale's size. style_masks: one (1, 1, h, w) mask in [0, 1]
        or None per style (see ``regions``); keep_mask: likewise, content kept there.
        fine_style/coarse_style: two images mixed into one more style (``mix_scales``).
        plan: this Stylizer's ``plan()`` for the same images (made here when not given).
        temporal: a video frame's temporal term (``TemporalTarget``), at every scale.
        """
        t_start = time.perf_counter()
        styles, masks = self._checked_inputs(content, styles, style_masks, keep_mask,
                                             fine_style, coarse_style)
        _check_temporal(temporal)
        mixing = fine_style is not None
        if plan is None:
            plan = self.plan(content, styles, fine_style=fine_style, coarse_style=coarse_style)
        else:
            self._check_plan(plan, content, mixing)
        events = _Events(callback, cancel, plan.total_iterations, t_start)
        timings: dict[str, float] = {}
        mix_run = None
        try:
            if mixing:
                t = time.perf_counter()
                mixed, mix_run = self._mix(fine_style.float(), coarse_style.float(), plan.mix, events)
                styles, masks = styles + [mixed], masks + [None]
                timings["mix"] = time.perf_counter() - t
            x, result_losses, scales_run = self._run_scales(content.float(), styles, masks, keep_mask,
                                                            init_image, plan, events, timings, temporal)
        except RuntimeError as exc:
            if _is_oom(exc):
                raise OutOfMemory(f"out of memory on {self.device.type} at size {self.config.output_size}; "
                                  "use a smaller --size, --tile-size or another device") from None
            raise
        image = self._finish(x, plan, content.float())
        elapsed = time.perf_counter() - t_start
        timings.update(total=elapsed, per_iteration=timings.get("optimize", 0.0) / max(events.done, 1))
        return Result(image, result_losses, events.done, events.stopped, str(self.device), timings,
                      plan=plan.ran(scales_run, mix_run), precision=self.precision)

    def _checked_inputs(self, content, styles, style_masks, keep_mask, fine_style, coarse_style
                        ) -> tuple[list[torch.Tensor], list[Optional[torch.Tensor]]]:
        """The styles (as float32) and one mask or None per style, after checking every input."""
        _check_image_tensor(content, "content image")
        styles = [s.float() for s in styles]
        for i, s in enumerate(styles):
            _check_image_tensor(s, f"style image {i + 1}")
        masks = list(style_masks) if style_masks is not None else [None] * len(styles)
        if len(masks) != len(styles):
            raise BadOption(f"{len(masks)} style masks for {len(styles)} style images; give one "
                            f"mask (or none) per style image")
        for i, m in enumerate(masks + [keep_mask]):
            if m is not None and (not isinstance(m, torch.Tensor) or m.ndim != 4 or m.shape[:2] != (1, 1)):
                what = "keep mask" if i == len(masks) else f"mask of style image {i + 1}"
                raise BadOption(f"{what}: expected a tensor of shape (1, 1, H, W) in [0, 1]")
        if (fine_style is None) != (coarse_style is None):
            raise BadOption("fine_style and coarse_style go together: give both or neither")
        if fine_style is not None:
            _check_image_tensor(fine_style, "fine style image")
            _check_image_tensor(coarse_style, "coarse style image")
        if self.style_weights and not styles and fine_style is None:
            raise BadOption("style_weight > 0 but no style image was given")
        return styles, masks

    def _finish(self, x: torch.Tensor, plan: Plan, content: torch.Tensor) -> torch.Tensor:
        """The last image as the user gets it: RGB on the CPU, the output's size, colours
        finished."""
        image = deprocess(x.detach()).clamp(0, 1).cpu()
        out = plan.output
        if tuple(image.shape[-2:]) != (out.height, out.width):
            # stopped before the last scale: still the requested size
            image = F.interpolate(image, size=(out.height, out.width),
                                  mode="bicubic", align_corners=False).clamp(0, 1)
        return color.finish(self.config.color.preserve_colors, image,
                            resize_tensor(content, self.config.output_size))

    def _run_scales(self, content: torch.Tensor, styles: list[torch.Tensor],
                    masks: list[Optional[torch.Tensor]], keep_mask: Optional[torch.Tensor],
                    init_image: Optional[torch.Tensor], plan: Plan, events: _Events,
                    timings: dict[str, float], temporal: Optional[TemporalTarget] = None
                    ) -> tuple[torch.Tensor, dict[str, float], list[int]]:
        """The coarse-to-fine schedule: optimize at each size, the upsampled result starting
        the next. Returns the last image (VGG space), its losses and the iterations each
        scale ran. ``content`` is the original photo: what the optimization sees of it and
        of the styles is colour-prepared here (``color.prepare_inputs``)."""
        seen_content, seen_styles = color.prepare_inputs(self.config.color.preserve_colors, content,
                                                         styles, self.config.color.color_match)
        x: Optional[torch.Tensor] = None
        final: dict[str, float] = {}
        scales_run: list[int] = []
        for index, scale in enumerate(plan.scales, start=1):
            if events.stopped:
                break
            t = time.perf_counter()
            step = self._scale_step(scale, index, plan, seen_content, seen_styles, masks, keep_mask,
                                    temporal)
            with torch.no_grad():
                if x is None:
                    start = self.initial_image(step.content_bgr, init_image)
                else:  # the coarser result, upsampled, is where this scale starts
                    start = F.interpolate(x, size=step.content_bgr.shape[-2:], mode="bicubic",
                                          align_corners=False)
                step.objective = self._matched(step, start)
            timings[f"targets_{scale.size}"] = time.perf_counter() - t
            step.render = self._renderer(resize_tensor(content, scale.size))
            t = time.perf_counter()
            x, final, ran = self._optimize(start.detach().requires_grad_(True), step, events)
            scales_run.append(ran)
            timings[f"optimize_{scale.size}"] = time.perf_counter() - t
            timings["optimize"] = timings.get("optimize", 0.0) + timings[f"optimize_{scale.size}"]
        if x is None:  # stopped before any scale ran (e.g. during scale mixing)
            x = preprocess(resize_tensor(seen_content, plan.scales[0].size).to(self.device))
        return x, final, scales_run

    @torch.no_grad()
    def _scale_step(self, scale: ScalePlan, index: int, plan: Plan, content: torch.Tensor,
                    styles: list[torch.Tensor], masks: list[Optional[torch.Tensor]],
                    keep_mask: Optional[torch.Tensor], temporal: Optional[TemporalTarget] = None
                    ) -> _Step:
        """One scale of the schedule, its targets made: what ``_optimize`` needs."""
        content_bgr = preprocess(resize_tensor(content, scale.size).to(self.device))
        h, w = content_bgr.shape[-2:]
        keep = None if keep_mask is None else regions.resize_mask(keep_mask.float(), h, w).to(self.device)
        objective = for_scale(self.config.loss, self.content_targets(content_bgr, scale.tile),
                              self.style_regions(styles, masks, keep, scale.size, h, w, scale.tile),
                              positions_factor=plan.output.height * plan.output.width / (h * w))
        if temporal is not None:
            factor = plan.output.height * plan.output.width / (h * w)
            objective = dataclasses.replace(objective, temporal=self._temporal_term(temporal, h, w, factor))
        return _Step(scale, objective, content_bgr, keep, self._tiles(h, w, scale.tile, objective),
                     self.config.optim.tolerance, index=index, count=len(plan.scales))

    def _matched(self, step: _Step, start: torch.Tensor) -> Objective:
        """``step``'s objective with its style targets matched to the image the step starts
        from, for a loss that matches them per scale (``StyleLoss.rematches_per_scale``)."""
        objective = step.objective
        if not objective.rematches:
            return objective
        image = regions.compose(start, step.content_bgr, step.keep)
        layers = [layer for t in objective.style for layer in t.layers]
        features = self._features(image, layers)
        style = tuple(t.matched(features, tuple(image.shape[-2:]), objective.regions)
                      for t in objective.style)
        return dataclasses.replace(objective, style=style)

    def _temporal_term(self, temporal: TemporalTarget, height: int, width: int,
                       positions_factor: float) -> TemporalTerm:
        """The temporal term at one scale: target and mask at its size, the weight times its
        positions factor (see ``objective.for_scale``)."""
        # resize_mask resizes any number of channels (antialiased, kept in [0, 1])
        target = regions.resize_mask(temporal.image.float(), height, width).to(self.device)
        mask = regions.resize_mask(temporal.mask.float(), height, width).to(self.device)
        return TemporalTerm(temporal.weight * positions_factor, preprocess(target), mask)

    @staticmethod
    def _tiles(height: int, width: int, tile: int, objective: Objective) -> list[tiles.Tile]:
        if not tile or not objective.layers:
            return []
        return tiles.make_tiles(height, width, tile, halo_for(objective.layers))

    def _renderer(self, content_rgb: torch.Tensor) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        mode = self.config.color.preserve_colors
        if mode not in ("luminance", "swap"):
            return None
        original = content_rgb.cpu()
        return lambda rgb: color.finish(mode, rgb.cpu(), original)

    # ---- scale mixing ----------------------------------------------------------------

    def mix_scales(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """The paper's scale mixing: a new style image with ``fine``'s small-scale texture and
        ``coarse``'s large-scale structure (RGB (1, 3, H, W) in [0, 1], on the CPU).

        Starting from ``coarse``, only the Gram matrices of the lower layers
        (``fine_layers``) are matched to ``fine``'s; the deeper layers, never asked to change,
        keep the coarse image's arrangement. Made at the size the styles are used at the
        last scale, but never larger than ``coarse`` itself (upsampling adds no detail).
        """
        step = mix_step(self.config, _hw(fine), _hw(coarse), self.device)
        events = _Events(None, None, step.iterations, time.perf_counter())
        return self._mix(fine.float(), coarse.float(), step, events)[0]

    def _mix(self, fine: torch.Tensor, coarse: torch.Tensor, scale: ScalePlan, events: _Events
             ) -> tuple[torch.Tensor, int]:
        """``mix_scales`` as the plan's step ``scale``; returns the image and the iterations run.

        Its objective is built here from what the mixing needs, nothing else of the run's
        loss options: the ``fine_layers`` with equal weights (the few fine layers all carry
        the texture), no content, no tv; every planned iteration runs (no tolerance)."""
        weights = equal_weights(self.config.scale.fine_layers)
        self._network_for(list(weights))
        with torch.no_grad():
            start = preprocess(resize_tensor(coarse, scale.size).to(self.device))
            h, w = start.shape[-2:]
            fine_bgr = preprocess(resize_tensor(fine, scale.size).to(self.device))
            style_regions = self._with_targets(regions.plan(1, [None], None, None, h, w),
                                               lambda i: self._targets(fine_bgr, weights, scale.tile, GRAM),
                                               list(weights), GRAM)
        objective = Objective(style=tuple(LayerTerm(layer, 1.0 * wl, GRAM) for layer, wl in weights.items()),
                              regions=tuple(style_regions))
        step = _Step(scale, objective, start, None, self._tiles(h, w, scale.tile, objective),
                     tolerance=0.0, phase="mix")
        x, _, ran = self._optimize(start.clone().requires_grad_(True), step, events)
        return deprocess(x.detach()).clamp(0, 1).cpu(), ran

    # ---- one step --------------------------------------------------------------------

    def _evaluate(self, x: torch.Tensor, step: _Step, backward: bool) -> dict[str, torch.Tensor]:
        """The objective's terms at ``x`` (the free pixels); with ``backward``, x.grad too."""
        image = regions.compose(x, step.content_bgr, step.keep)
        objective = step.objective
        if not step.tiles:
            terms = objective.evaluate(self._features(image, objective.layers, loop=True), image)
            if backward:
                terms["total"].backward()
            return terms
        # tiles run the float32 network: large outputs trade speed for exactness here
        terms, grad = tiling.loss_and_grad(self.vgg, image, step.tiles, objective, need_grad=backward)
        pixel = objective.pixel_terms(image)
        terms.update(pixel)
        if backward:
            # the gradient of ⟨image, grad⟩ is grad: carried through compose to x
            surrogate = (image * grad).sum()
            for value in pixel.values():
                surrogate = surrogate + value
            surrogate.backward()
        return with_total({k: v.detach() for k, v in terms.items()})

    def _closure(self, x: torch.Tensor, step: _Step, optimizer: torch.optim.Optimizer,
                 last: dict[str, torch.Tensor], best: Optional["_BestIterate"] = None
                 ) -> Callable[[], torch.Tensor]:
        """The optimizer's closure; it leaves the evaluated terms in ``last`` (and, given
        ``best``, restarts from the best image when the loss rises).

        The paper's loss values are huge (1e10+ on VGG's 0..255 scale). L-BFGS is scale
        invariant except where it falls back to a plain gradient step of length lr, which
        at that scale throws the image to infinity. So the optimizer sees total / S, with
        S fixed at the first evaluation to make the mean |gradient| one pixel level; the
        reported losses stay unscaled."""
        factor: list[float] = []

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            terms = self._evaluate(x, step, backward=True)
            if not factor:
                mean_grad = float(x.grad.abs().mean())
                factor.append(1.0 / mean_grad if math.isfinite(mean_grad) and mean_grad > 0 else 1.0)
            x.grad.mul_(factor[0])
            terms = {k: v.detach() for k, v in terms.items()}
            loss = terms["total"] * factor[0]
            if best is not None:
                loss, terms = best.check(x, loss, terms, optimizer)
            last.clear()
            last.update(terms)
            return loss

        return closure

    def _optimize(self, x: torch.Tensor, step: _Step, events: _Events
                  ) -> tuple[torch.Tensor, dict[str, float], int]:
        """Optimizes one step; returns the image, its losses and the iterations run (fewer
        than planned when stopped or settled)."""
        optimizer = self._make_optimizer(x)
        last: dict[str, torch.Tensor] = {}
        best = _BestIterate() if _restarts_on_rise(step, optimizer) else None
        closure = self._closure(x, step, optimizer, last, best)
        # the valid pixel range, per channel, in VGG's input space
        lowest = preprocess(torch.zeros(1, 3, 1, 1, device=x.device, dtype=x.dtype))
        highest = preprocess(torch.ones(1, 3, 1, 1, device=x.device, dtype=x.dtype))
        changes: list[float] = []  # mean |pixel change| per step, in 0..255 levels
        it = 0
        for it in range(1, step.plan.iterations + 1):
            if events.cancel is not None and events.cancel.cancelled:
                raise Cancelled(f"cancelled after {events.done} of {events.total} iterations")
            before = x.detach().clone()  # the last good image, should this step diverge
            optimizer.step(closure)
            with torch.no_grad():
                x.clamp_(lowest, highest)  # projection: see the module docstring
            # one device->host transfer for all terms, not one per term (matters on a GPU)
            values = dict(zip(last, torch.stack(list(last.values())).double().tolist()))
            self._check_finite(values, x, before, step, events)
            events.done += 1
            changes.append(float((x.detach() - before).abs().mean()))
            if events.callback is not None:
                events.callback(self._progress(x, step, events, values))
            if events.stopped or self._settled(changes, step.tolerance):
                break
        final = self._final_losses(x, step, last, exact=best is not None)
        if best is not None and final["total"] > best.total:  # the last step climbed
            with torch.no_grad():
                x.copy_(best.x)
            final = {k: float(v) for k, v in best.terms.items()}
        with torch.no_grad():
            image = regions.compose(x.detach(), step.content_bgr, step.keep)
        return image, final, it

    @staticmethod
    def _check_finite(values: dict[str, float], x: torch.Tensor, before: torch.Tensor,
                      step: _Step, events: _Events) -> None:
        """Raises ``RunFailed`` (with the last good image) when the step diverged."""
        if math.isfinite(values["total"]) and torch.isfinite(x).all():
            return
        error = RunFailed(f"the loss became {values['total']} at iteration {events.done + 1}; "
                          "lower the learning rate or the loss weights")
        with torch.no_grad():
            good = regions.compose(before, step.content_bgr, step.keep)
        error.last_good = (events.done, deprocess(good).clamp(0, 1).cpu())
        raise error

    @staticmethod
    @torch.no_grad()
    def _progress(x: torch.Tensor, step: _Step, events: _Events, values: dict[str, float]) -> Progress:
        # deprocess makes the event's own copy: the optimizer changes x in place
        image = deprocess(regions.compose(x.detach(), step.content_bgr, step.keep))
        return Progress(iteration=events.done, iterations=events.total, losses=values,
                        elapsed=time.perf_counter() - events.t0, image=image, scale=step.index,
                        scales=step.count, size=step.plan.size, phase=step.phase,
                        _stop=events.request_stop, _render=step.render)

    def _final_losses(self, x: torch.Tensor, step: _Step, last: dict[str, torch.Tensor],
                      exact: bool = False) -> dict[str, float]:
        """The final image's own losses (those in ``last`` are of the iterate before the last
        step), except on tiled (large) steps, where that would cost two more passes over the
        image for a report, unless ``exact`` (they decide which image is kept)."""
        if step.tiles and last and not exact:
            return {k: float(v) for k, v in last.items()}
        with torch.no_grad():
            return {k: float(v) for k, v in self._evaluate(x, step, backward=False).items()}

    @staticmethod
    def _settled(changes: list[float], tolerance: float) -> bool:
        """True once the image has stopped changing: the mean |pixel change| of the last
        ``SETTLE_WINDOW`` steps is under ``tolerance`` levels (0 = never stop early)."""
        if tolerance <= 0 or len(changes) < SETTLE_WINDOW:
            return False
        return sum(changes[-SETTLE_WINDOW:]) / SETTLE_WINDOW < tolerance


def _digest(image: torch.Tensor) -> tuple:
    """A key for an image's exact pixels (and shape, dtype)."""
    data = image.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return tuple(image.shape), str(image.dtype), hashlib.sha256(data.numpy().tobytes()).hexdigest()


def _hw(image: torch.Tensor) -> tuple[int, int]:
    return tuple(image.shape[-2:])  # type: ignore[return-value]


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


def _cached_weights() -> dict[str, torch.Tensor]:
    """Decoded VGG weights, loaded once per process (the service builds many Stylizers)."""
    global _WEIGHTS
    with _WEIGHTS_LOCK:
        if _WEIGHTS is None:
            _WEIGHTS = load_weights()
        return _WEIGHTS
