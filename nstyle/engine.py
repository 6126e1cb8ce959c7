"""The optimization loop: the image is the only variable.

``Stylizer(config).run(content, styles)`` takes RGB tensors in [0, 1] (any size; they are
resized here, so every front end gets the same sizing) and returns a ``Result``. Progress
is reported through a callback that receives a ``Progress`` event after every iteration;
the callback can end the run early with ``event.stop()`` (the current image is returned),
and a ``CancelToken`` aborts it from another thread (``Cancelled`` is raised). The engine
never prints, never touches files and never exits.

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
coarse-to-fine schedule below, scale mixing in ``mix_scales``); ``tiling`` bounds memory
for large outputs without changing the result.

With ``precision`` bf16 the network runs in bfloat16 inside the optimization loop (the
targets are computed once in float32); losses and Grams accumulate in float32. See
docs/benchmark.md for what this buys and what it costs in loss.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from . import color, losses, regions, tiling
from .config import MIN_SIZE, Config
from .errors import BadOption, Cancelled, OutOfMemory, RunFailed, TooLarge
from .images import fit_size, to_pil
from .regions import Region
from .vgg import VGG19Features, deprocess, last_needed_layer, load_weights, preprocess

BUILTIN_INITS = ("content", "noise", "gray")
#: automatic tiling keeps the estimated peak under this share of the memory available, so
#: that estimate errors and other programs leave the machine usable
AUTO_TILE_SHARE = 0.75
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


@dataclass
class Progress:
    """One iteration's report. ``losses`` holds each term's contribution to ``total``."""

    iteration: int  # counted over the whole run: every scale (and scale mixing) in turn
    iterations: int
    losses: dict[str, float]
    elapsed: float
    _image: torch.Tensor = field(repr=False)
    _stop: Callable[[], None] = field(repr=False)
    scale: int = 1  # which scale of the coarse-to-fine schedule (1-based) ...
    scales: int = 1  # ... of how many
    size: int = 0  # that scale's longest side in pixels
    phase: str = "stylize"  # or "mix": synthesizing the --fine-style/--coarse-style image
    #: turns the image being optimized into what the user will get (colour finishing)
    _render: Optional[Callable[[torch.Tensor], torch.Tensor]] = field(default=None, repr=False)

    @property
    def total(self) -> float:
        return self.losses["total"]

    @property
    def eta(self) -> float:
        """Seconds left, extrapolated from the mean time per iteration so far."""
        return self.elapsed / self.iteration * (self.iterations - self.iteration)

    def preview(self) -> "Image.Image":  # noqa: F821 - PIL type, imported lazily
        """The current image as an RGB PIL image (computed on demand)."""
        rgb = deprocess(self._image).clamp(0, 1)
        return to_pil(self._render(rgb) if self._render is not None else rgb)

    def stop(self) -> None:
        """End the run after this iteration; ``run`` returns the current image."""
        self._stop()


@dataclass
class Result:
    image: torch.Tensor  # (1, 3, H, W) RGB in [0, 1], on the CPU
    losses: dict[str, float]  # final contributions per term, plus 'total'
    iterations: int  # iterations actually run
    stopped_early: bool
    device: str
    timings: dict[str, float]
    #: how the run was carried out: scales, iterations and tiling per scale, memory estimate
    plan: dict = field(default_factory=dict)
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


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or \
        "out of memory" in text or "not enough memory" in text or "can't allocate memory" in text


@dataclass
class _Events:
    """Iteration counting and stop requests shared by every phase and scale of one run."""

    callback: Optional[Callable[[Progress], None]]
    cancel: Optional[CancelToken]
    total: int
    t0: float
    done: int = 0
    stopped: bool = False

    def request_stop(self) -> None:
        self.stopped = True


@dataclass
class _Scale:
    """What one scale of the schedule optimizes against."""

    size: int
    iterations: int
    tile: int  # tile core in pixels, 0 = whole image
    content_bgr: torch.Tensor
    keep: Optional[torch.Tensor]  # (1, 1, H, W) keep mask at this size
    content_targets: dict[str, torch.Tensor]
    regions: list[Region]
    tiles: list = field(default_factory=list)
    #: output positions / this scale's positions. The content and TV terms are sums over
    #: positions while the style term (Grams divided by M) is not, so at a coarse scale
    #: style would outweigh content by this factor; they are multiplied by it instead, so
    #: every scale keeps the balance the weights set for the output size
    positions_factor: float = 1.0


class Stylizer:
    """Runs Gatys et al.'s optimization for one ``Config``; reusable across runs."""

    def __init__(self, config: Config, device: Optional[torch.device] = None,
                 style_targets: Optional["StyleTargets"] = None) -> None:
        self.config = config
        self.device = device or resolve_device(config.model.device)
        #: Gram targets shared with other runs (``StyleTargets``); None: computed per run
        self.style_targets = style_targets
        loss = config.loss
        self.content_weights = loss.layer_weights("content") if loss.content_weight > 0 else {}
        self.style_weights = loss.layer_weights("style") if loss.style_weight > 0 else {}
        needed = list(self.content_weights) + list(self.style_weights)
        self.layers = tuple(dict.fromkeys(needed))
        self.vgg: Optional[VGG19Features] = None
        # the network the optimization loop runs: self.vgg itself, or a bfloat16 copy of it
        # (targets are always computed by self.vgg in float32, once)
        self.loop_vgg: Optional[VGG19Features] = None
        self.dtype = resolve_precision(config.model.precision, self.device)
        self.precision = "bf16" if self.dtype == torch.bfloat16 else "fp32"
        # channels_last lets oneDNN skip a layout reorder around every conv on the CPU (and
        # lets gram() use the features without a copy); measured in bench/benchmark.py
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.preserve_format
        if self.layers:
            self.vgg = VGG19Features(last_needed_layer(self.layers), config.model.pooling,
                                     weights=_cached_weights(),
                                     padding=config.model.padding).to(self.device)
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

    def _style_size(self, size: int) -> int:
        return max(16, round(self.config.image.style_scale * size))

    @torch.no_grad()
    def _style_grams(self, style: torch.Tensor, size: int, tile: int = 0) -> dict[str, torch.Tensor]:
        """Gram/M per style layer of one style image at ``style_scale * size``."""
        x = preprocess(resize_tensor(style.float(), self._style_size(size)).to(self.device))
        if self.style_targets is None:
            return self._compute_grams(x, tile)
        key = self.style_targets.key(x, tile, self.config, list(self.style_weights))
        grams = self.style_targets.get(key, self.device)
        if grams is None:
            grams = self._compute_grams(x, tile)
            self.style_targets.put(key, grams)
        return grams

    def _compute_grams(self, x: torch.Tensor, tile: int) -> dict[str, torch.Tensor]:
        if tile:
            h, w = x.shape[-2:]
            tiles = tiling.make_tiles(h, w, tile, tiling.halo_for(list(self.style_weights)))
            return tiling.gram_sums(self.vgg, x, list(self.style_weights), tiles)[0]
        return {layer: losses.gram(f) for layer, f in self._features(x, self.style_weights).items()}

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
        grams: dict[int, dict[str, torch.Tensor]] = {}
        for region in planned:
            for i, w in region.styles.items():
                if i not in grams:
                    grams[i] = self._style_grams(styles[i], size, tile)
                for layer, g in grams[i].items():
                    t = g * w
                    region.targets[layer] = region.targets[layer] + t if layer in region.targets else t
            if region.mask is not None:
                region.mask = region.mask.to(self.device)
            region.at_layers(list(self.style_weights))
        return planned

    def prepare_style_targets(self, styles: Sequence[torch.Tensor]) -> int:
        """Computes ``styles``' Gram targets for every scale of this config into
        ``self.style_targets``, ahead of the runs that share them; returns how many
        (style, scale) targets it holds for them. Tiles are planned for a square content at
        the output size (the largest); a content whose plan tiles otherwise, or colours
        that match each style to its content (preserve_colors luminance or histogram),
        make targets that a run then computes for itself."""
        if self.style_targets is None or not self.style_weights:
            return 0
        if self.config.color.preserve_colors in ("luminance", "histogram"):
            return 0  # the styles the loop sees depend on each content
        side = self.config.output_size
        plans = self.memory_plan((side, side), [tuple(s.shape[-2:]) for s in styles])
        for p in plans:
            for style in styles:
                _check_image_tensor(style, "style image")
                self._style_grams(style, p["size"], p["tile"])
        return len(plans) * len(styles)

    @torch.no_grad()
    def content_targets(self, content_bgr: torch.Tensor, tile: int = 0) -> dict[str, torch.Tensor]:
        if tile and self.content_weights:
            h, w = content_bgr.shape[-2:]
            tiles = tiling.make_tiles(h, w, tile, tiling.halo_for(list(self.content_weights)))
            return tiling.features(self.vgg, content_bgr, list(self.content_weights), tiles)
        return {k: v.detach() for k, v in self._features(content_bgr, self.content_weights).items()}

    # ---- memory ----------------------------------------------------------------------

    def memory_plan(self, content_hw: tuple[int, int], style_hws: Sequence[tuple[int, int]] = ()
                    ) -> list[dict]:
        """Per scale: size, tile core (0 = whole image) and estimated peak bytes.

        Raises ``TooLarge`` when a scale cannot fit in ``memory_limit`` (default: the memory
        available now) even tiled, before anything heavy is done.
        """
        cfg = self.config
        limit = int(cfg.memory.memory_limit * 2 ** 30) if cfg.memory.memory_limit else self._free_memory()
        last = last_needed_layer(self.layers) if self.layers else "relu1_1"
        halo = tiling.halo_for([last])
        ch, cw = content_hw
        plans = []
        for size, iters in zip(cfg.scale_sizes, cfg.scale_iteration_counts):
            w, h = fit_size(cw, ch, size)
            style_size = self._style_size(size)
            shw = max((fit_size(sw, sh, style_size)[::-1] for sh, sw in style_hws),
                      key=lambda t: t[0] * t[1], default=(0, 0))
            history = min(cfg.optim.history_size, iters) if cfg.optim.optimizer == "lbfgs" else 0

            def peak(tile: int) -> int:
                return tiling.estimate_peak(h, w, last_layer=last, content_layers=list(self.content_weights),
                                            tile=tile, halo=halo, history=history, style_hw=shw)

            if cfg.memory.tile_size is not None:
                tile = cfg.memory.tile_size
            else:  # the whole image if it fits with room to spare, else the largest tile
                tile = next((t for t in tiling.TILE_CHOICES if peak(t) <= AUTO_TILE_SHARE * limit),
                            next((t for t in tiling.TILE_CHOICES if peak(t) <= limit), tiling.TILE_CHOICES[-1]))
            if tile and tile + 2 * halo >= max(h, w) and cfg.memory.tile_size is None:
                tile = 0  # a single tile would be the whole image
            need = peak(tile)
            if need > limit:
                raise TooLarge(
                    f"a {w}x{h} output needs about {need / 2 ** 30:.1f} GiB (estimated), more than the "
                    f"{limit / 2 ** 30:.1f} GiB {'allowed by --memory-limit' if cfg.memory.memory_limit else 'available'}"
                    f"; use a smaller --size, fewer iterations or --history-size at that scale, or --tile-size 256")
            plans.append({"size": size, "width": w, "height": h, "iterations": iters, "tile": tile,
                          "estimated_peak_gib": round(need / 2 ** 30, 2)})
        return plans

    def _free_memory(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.mem_get_info(self.device)[0])
        return tiling.available_memory()

    # ---- the run ---------------------------------------------------------------------

    def initial_image(self, content_bgr: torch.Tensor, init_image: Optional[torch.Tensor]) -> torch.Tensor:
        init = self.config.image.init
        if init_image is not None:
            _check_image_tensor(init_image, "init image")
            h, w = content_bgr.shape[-2:]
            init_image = F.interpolate(init_image.float(), size=(h, w), mode="bicubic",
                                       antialias=True, align_corners=False).clamp(0, 1)
            return preprocess(init_image.to(self.device))
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
            cancel: Optional[CancelToken] = None) -> Result:
        """Optimize an image with ``content``'s content and ``styles``' style.

        content: (1, 3, H, W) RGB in [0, 1], any size: it is resized so its longest side is
        the output size (``config.output_size``). styles: such tensors, resized to
        ``style_scale`` times each scale's size. style_masks: one (1, 1, h, w) mask in [0, 1]
        or None per style (see ``regions``); keep_mask: likewise, content kept there.
        fine_style/coarse_style: two images mixed into one more style (``mix_scales``).
        """
        t_start = time.perf_counter()
        cfg = self.config
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
        mixing = fine_style is not None
        if mixing:
            _check_image_tensor(fine_style, "fine style image")
            _check_image_tensor(coarse_style, "coarse style image")
        if self.style_weights and not styles and not mixing:
            raise BadOption("style_weight > 0 but no style image was given")
        style_hws = [tuple(s.shape[-2:]) for s in styles]
        if mixing:
            style_hws.append(tuple(coarse_style.shape[-2:]))
        plans = self.memory_plan(tuple(content.shape[-2:]), style_hws)
        total = sum(p["iterations"] for p in plans) + (cfg.scale.mix_iterations if mixing else 0)
        events = _Events(callback, cancel, total, t_start)
        timings: dict[str, float] = {}
        try:
            if mixing:
                t = time.perf_counter()
                styles = styles + [self.mix_scales(fine_style.float(), coarse_style.float(), events)]
                masks = masks + [None]
                timings["mix"] = time.perf_counter() - t
            mode = cfg.color.preserve_colors
            opt_content, opt_styles = color.prepare_inputs(mode, content.float(), styles,
                                                           cfg.color.color_match)
            x, result_losses = self._run_scales(opt_content, opt_styles, masks, keep_mask,
                                                init_image, plans, events, timings,
                                                chroma_from=content.float())
        except RuntimeError as exc:
            if _is_oom(exc):
                raise OutOfMemory(f"out of memory on {self.device.type} at size {cfg.output_size}; "
                                  "use a smaller --size, --tile-size or another device") from None
            raise
        image = deprocess(x.detach()).clamp(0, 1).cpu()
        if tuple(image.shape[-2:]) != (plans[-1]["height"], plans[-1]["width"]):
            # stopped before the last scale: still the requested size
            image = F.interpolate(image, size=(plans[-1]["height"], plans[-1]["width"]),
                                  mode="bicubic", align_corners=False).clamp(0, 1)
        image = color.finish(cfg.color.preserve_colors, image,
                             resize_tensor(content.float(), cfg.output_size))
        elapsed = time.perf_counter() - t_start
        timings.update(total=elapsed, per_iteration=timings.get("optimize", 0.0) / max(events.done, 1))
        return Result(image, result_losses, events.done, events.stopped,
                      str(self.device), timings, plan={"scales": plans, "mixed_styles": mixing},
                      precision=self.precision)

    def _run_scales(self, content: torch.Tensor, styles: list[torch.Tensor],
                    masks: list[Optional[torch.Tensor]], keep_mask: Optional[torch.Tensor],
                    init_image: Optional[torch.Tensor], plans: list[dict], events: _Events,
                    timings: dict[str, float], chroma_from: Optional[torch.Tensor] = None
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The coarse-to-fine schedule: optimize at each size, the upsampled result starting
        the next. Returns the last image (VGG space) and its losses. ``chroma_from``: the
        original content, whose colours previews get under --preserve-colors luminance/swap."""
        cfg = self.config
        x: Optional[torch.Tensor] = None
        final: dict[str, float] = {}
        for index, p in enumerate(plans, start=1):
            if events.stopped:
                break
            t = time.perf_counter()
            with torch.no_grad():
                content_rgb = resize_tensor(content, p["size"])
                content_bgr = preprocess(content_rgb.to(self.device))
                h, w = content_bgr.shape[-2:]
                keep = None if keep_mask is None else \
                    regions.resize_mask(keep_mask.float(), h, w).to(self.device)
                scale = _Scale(p["size"], p["iterations"], p["tile"], content_bgr, keep,
                               self.content_targets(content_bgr, p["tile"]),
                               self.style_regions(styles, masks, keep, p["size"], h, w, p["tile"]),
                               positions_factor=plans[-1]["height"] * plans[-1]["width"] / (h * w))
                if scale.tile:
                    scale.tiles = tiling.make_tiles(h, w, scale.tile, tiling.halo_for(self.layers))
                if x is None:
                    start = self.initial_image(content_bgr, init_image)
                else:  # the coarser result, upsampled, is where this scale starts
                    start = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
            timings[f"targets_{p['size']}"] = time.perf_counter() - t
            render = None if chroma_from is None else \
                self._renderer(resize_tensor(chroma_from, p["size"]))
            t = time.perf_counter()
            x, final, p["iterations_run"] = self._optimize(start.detach().requires_grad_(True), scale,
                                                           events, index, len(plans), render)
            timings[f"optimize_{p['size']}"] = time.perf_counter() - t
            timings["optimize"] = timings.get("optimize", 0.0) + timings[f"optimize_{p['size']}"]
        if x is None:  # stopped before any scale ran (e.g. during scale mixing)
            x = preprocess(resize_tensor(content, plans[0]["size"]).to(self.device))
        return x, final

    def _renderer(self, content_rgb: torch.Tensor) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
        mode = self.config.color.preserve_colors
        if mode not in ("luminance", "swap"):
            return None
        original = content_rgb.cpu()
        return lambda rgb: color.finish(mode, rgb.cpu(), original)

    def mix_scales(self, fine: torch.Tensor, coarse: torch.Tensor,
                   events: Optional[_Events] = None) -> torch.Tensor:
        """The paper's scale mixing: a new style image with ``fine``'s small-scale texture and
        ``coarse``'s large-scale structure.

        Starting from ``coarse``, only the Gram matrices of the lower layers
        (``fine_layers``) are matched to ``fine``'s; the deeper layers, never asked to change,
        keep the coarse image's arrangement. Made at the size the styles are used at the
        last scale, but never larger than ``coarse`` itself (upsampling adds no detail).
        """
        cfg = self.config
        size = max(MIN_SIZE, min(self._style_size(cfg.output_size), max(coarse.shape[-2:])))
        sub = Config.from_options(
            cfg, content_weight=0.0, style_weight=1.0, tv_weight=0.0, style_layers=cfg.scale.fine_layers,
            # equal weights: the few fine layers all carry the texture; every iteration runs
            style_layer_weights=[1.0] * len(cfg.scale.fine_layers), tolerance=0.0,
            style_blend_weights=None, style_scale=1.0, init="content", size=size, scales=None,
            scale_iterations=None, iterations=cfg.scale.mix_iterations, preserve_colors="none")
        mixer = Stylizer(sub, self.device)
        events = events or _Events(None, None, cfg.scale.mix_iterations, time.perf_counter())
        coarse_rgb = resize_tensor(coarse, size)
        bgr = preprocess(coarse_rgb.to(self.device))
        h, w = bgr.shape[-2:]
        plan = mixer.memory_plan((h, w), [tuple(fine.shape[-2:])])[0]
        scale = _Scale(size, sub.optim.iterations, plan["tile"], bgr, None, {},
                       mixer.style_regions([fine], [None], None, size, h, w, plan["tile"]))
        if scale.tile:
            scale.tiles = tiling.make_tiles(h, w, scale.tile, tiling.halo_for(mixer.layers))
        x, _, _ = mixer._optimize(bgr.clone().requires_grad_(True), scale, events, 1, 1, None, phase="mix")
        return deprocess(x.detach()).clamp(0, 1).cpu()

    def _losses(self, image, content_t, style_regions, positions_factor: float = 1.0
                ) -> dict[str, torch.Tensor]:
        """Each term's weighted contribution, plus their sum as 'total'."""
        cfg = self.config.loss
        feats = self._features(image, self.layers, loop=True)
        terms: dict[str, torch.Tensor] = {}
        alpha = cfg.content_weight * positions_factor
        for layer, w in self.content_weights.items():
            terms[f"content.{layer}"] = alpha * w * losses.content_loss(feats[layer], content_t[layer])
        for layer, w in self.style_weights.items():
            terms[f"style.{layer}"] = cfg.style_weight * w * sum(
                (regions.style_loss(r, layer, feats[layer]) for r in style_regions),
                feats[layer].new_zeros((), dtype=torch.float32))  # no region: all kept
        if cfg.tv_weight > 0:
            terms["tv"] = cfg.tv_weight * positions_factor * losses.total_variation(image)
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    def _evaluate(self, x: torch.Tensor, scale: _Scale, backward: bool) -> dict[str, torch.Tensor]:
        """The loss terms at ``x`` (the free pixels); with ``backward``, x.grad too."""
        image = regions.compose(x, scale.content_bgr, scale.keep)
        if not scale.tile:
            terms = self._losses(image, scale.content_targets, scale.regions, scale.positions_factor)
            if backward:
                terms["total"].backward()
            return terms
        cfg = self.config.loss
        # tiles run the float32 network: large outputs trade speed for exactness here
        terms, grad = tiling.loss_and_grad(
            self.vgg, image, scale.tiles, content_targets=scale.content_targets,
            content_weights=self.content_weights, regions=scale.regions,
            style_weights=self.style_weights, alpha=cfg.content_weight * scale.positions_factor,
            beta=cfg.style_weight, need_grad=backward)
        if cfg.tv_weight > 0:
            terms["tv"] = cfg.tv_weight * scale.positions_factor * losses.total_variation(image)
        if backward:
            # the gradient of ⟨image, grad⟩ is grad: carried through compose to x
            surrogate = (image * grad).sum() + terms.get("tv", 0.0)
            surrogate.backward()
        terms = {k: v.detach() for k, v in terms.items()}
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    def _optimize(self, x: torch.Tensor, scale: _Scale, events: _Events, index: int, count: int,
                  render, phase: str = "stylize") -> tuple[torch.Tensor, dict[str, float], int]:
        """Optimizes one scale; returns the image, its losses and the iterations run (fewer
        than planned when stopped or settled)."""
        optimizer = self._make_optimizer(x)
        last: dict[str, torch.Tensor] = {}

        # The paper's loss values are huge (1e10+ on VGG's 0..255 scale). L-BFGS is scale
        # invariant except where it falls back to a plain gradient step of length lr, which
        # at that scale throws the image to infinity. So the optimizer sees total / S, with
        # S fixed at the first evaluation to make the mean |gradient| one pixel level; the
        # reported losses stay unscaled.
        factor: list[float] = []

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            terms = self._evaluate(x, scale, backward=True)
            if not factor:
                mean_grad = float(x.grad.abs().mean())
                factor.append(1.0 / mean_grad if math.isfinite(mean_grad) and mean_grad > 0 else 1.0)
            x.grad.mul_(factor[0])
            last.clear()
            last.update({k: v.detach() for k, v in terms.items()})
            return terms["total"].detach() * factor[0]

        # the valid pixel range, per channel, in VGG's input space
        lowest = preprocess(torch.zeros(1, 3, 1, 1, device=x.device, dtype=x.dtype))
        highest = preprocess(torch.ones(1, 3, 1, 1, device=x.device, dtype=x.dtype))
        changes: list[float] = []  # mean |pixel change| per step, in 0..255 levels
        it = 0
        for it in range(1, scale.iterations + 1):
            if events.cancel is not None and events.cancel.cancelled:
                raise Cancelled(f"cancelled after {events.done} of {events.total} iterations")
            before = x.detach().clone()  # the last good image, should this step diverge
            optimizer.step(closure)
            with torch.no_grad():
                x.clamp_(lowest, highest)  # projection: see the module docstring
            # one device->host transfer for all terms, not one per term (matters on a GPU)
            values = dict(zip(last, torch.stack(list(last.values())).double().tolist()))
            if not math.isfinite(values["total"]) or not torch.isfinite(x).all():
                error = RunFailed(f"the loss became {values['total']} at iteration {events.done + 1}; "
                                  "lower the learning rate or the loss weights")
                with torch.no_grad():
                    good = regions.compose(before, scale.content_bgr, scale.keep)
                error.last_good = (events.done, deprocess(good).clamp(0, 1).cpu())
                raise error
            events.done += 1
            changes.append(float((x.detach() - before).abs().mean()))
            if events.callback is not None:
                # the preview reads the image lazily: valid during the callback, not after it
                with torch.no_grad():
                    current = regions.compose(x.detach(), scale.content_bgr, scale.keep)
                events.callback(Progress(events.done, events.total, values,
                                         time.perf_counter() - events.t0, current, events.request_stop,
                                         index, count, scale.size, phase, render))
            if events.stopped or self._settled(changes):
                break
        # the losses above are those of the iterate before the last step: report the
        # final image's own losses, except on tiled (large) scales, where that would cost
        # two more passes over the image for a report
        if scale.tile and last:
            final = {k: float(v) for k, v in last.items()}
        else:
            with torch.no_grad():
                final = {k: float(v) for k, v in self._evaluate(x, scale, backward=False).items()}
        with torch.no_grad():
            image = regions.compose(x.detach(), scale.content_bgr, scale.keep)
        return image, final, it

    def _settled(self, changes: list[float]) -> bool:
        """True once the image has stopped changing: the mean |pixel change| of the last
        ``SETTLE_WINDOW`` steps is under ``tolerance`` levels (0 = never stop early)."""
        tolerance = self.config.optim.tolerance
        if tolerance <= 0 or len(changes) < SETTLE_WINDOW:
            return False
        return sum(changes[-SETTLE_WINDOW:]) / SETTLE_WINDOW < tolerance


class StyleTargets:
    """Style Gram targets kept for reuse: a style used with many contents (a batch, a
    service) goes through VGG once per scale, not once per run.

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
        import hashlib

        pixels = style_bgr.detach().float().cpu().contiguous().numpy()
        digest = hashlib.blake2b(pixels.tobytes(), digest_size=16).hexdigest()
        return (digest, tuple(pixels.shape), tile, tuple(layers), config.model.pooling,
                config.model.padding)

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
