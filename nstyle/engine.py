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
- With ``precision`` bf16 the network runs in bfloat16 inside the optimization loop (the
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

from . import losses
from .config import Config
from .errors import BadOption, Cancelled, OutOfMemory, RunFailed
from .images import fit_size, to_pil
from .vgg import VGG19Features, deprocess, last_needed_layer, load_weights, preprocess

BUILTIN_INITS = ("content", "noise", "gray")


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

    iteration: int
    iterations: int
    losses: dict[str, float]
    elapsed: float
    _image: torch.Tensor = field(repr=False)
    _stop: Callable[[], None] = field(repr=False)

    @property
    def total(self) -> float:
        return self.losses["total"]

    @property
    def eta(self) -> float:
        """Seconds left, extrapolated from the mean time per iteration so far."""
        return self.elapsed / self.iteration * (self.iterations - self.iteration)

    def preview(self) -> "Image.Image":  # noqa: F821 - PIL type, imported lazily
        """The current image as an RGB PIL image (computed on demand)."""
        return to_pil(deprocess(self._image))

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


class Stylizer:
    """Runs Gatys et al.'s optimization for one ``Config``; reusable across runs."""

    def __init__(self, config: Config, device: Optional[torch.device] = None) -> None:
        self.config = config
        self.device = device or resolve_device(config.model.device)
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
                                     weights=_cached_weights()).to(self.device)
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
    def style_targets(self, styles: Sequence[torch.Tensor], size: int) -> dict[str, torch.Tensor]:
        """Blend-weighted Gram targets A/M per style layer, each style at ``style_scale * size``."""
        if not self.style_weights:
            return {}
        blend = self.config.image.style_blend_weights
        if blend is None:
            blend = (1.0,) * len(styles)
        if len(blend) != len(styles):
            raise BadOption(f"style_blend_weights has {len(blend)} values for {len(styles)} style images")
        total = float(sum(blend))
        style_size = max(16, round(self.config.image.style_scale * size))
        targets: dict[str, torch.Tensor] = {}
        for style, weight in zip(styles, blend):
            if weight == 0:
                continue
            x = preprocess(resize_tensor(style, style_size).to(self.device))
            for layer, feats in self._features(x, self.style_weights).items():
                g = losses.gram(feats) * (weight / total)
                targets[layer] = targets[layer] + g if layer in targets else g
        return targets

    @torch.no_grad()
    def content_targets(self, content_bgr: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self._features(content_bgr, self.content_weights).items()}

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
            callback: Optional[Callable[[Progress], None]] = None,
            cancel: Optional[CancelToken] = None) -> Result:
        """Optimize an image with ``content``'s content and ``styles``' style.

        content: (1, 3, H, W) RGB in [0, 1], any size: it is resized so its longest side is
        ``config.image.size``. styles: such tensors, resized to ``style_scale * size``.
        """
        t_start = time.perf_counter()
        _check_image_tensor(content, "content image")
        for i, s in enumerate(styles):
            _check_image_tensor(s, f"style image {i + 1}")
        if self.style_weights and not styles:
            raise BadOption("style_weight > 0 but no style image was given")
        cfg = self.config
        torch.manual_seed(cfg.image.seed)
        try:
            with torch.no_grad():
                content_bgr = preprocess(resize_tensor(content.float(), cfg.image.size).to(self.device))
            content_t = self.content_targets(content_bgr)
            style_t = self.style_targets([s.float() for s in styles], cfg.image.size)
            x = self.initial_image(content_bgr, init_image).detach().requires_grad_(True)
            t_targets = time.perf_counter()
            result = self._optimize(x, content_t, style_t, callback, cancel, t_targets)
        except RuntimeError as exc:
            if _is_oom(exc):
                raise OutOfMemory(f"out of memory on {self.device.type} at size {cfg.image.size}; "
                                  "use a smaller --size or another device") from None
            raise
        result.timings.update(targets=t_targets - t_start, total=time.perf_counter() - t_start)
        return result

    def _losses(self, x, content_t, style_t) -> dict[str, torch.Tensor]:
        """Each term's weighted contribution, plus their sum as 'total'."""
        cfg = self.config.loss
        feats = self._features(x, self.layers, loop=True)
        terms: dict[str, torch.Tensor] = {}
        for layer, w in self.content_weights.items():
            terms[f"content.{layer}"] = cfg.content_weight * w * losses.content_loss(feats[layer], content_t[layer])
        for layer, w in self.style_weights.items():
            terms[f"style.{layer}"] = cfg.style_weight * w * losses.style_loss(feats[layer], style_t[layer])
        if cfg.tv_weight > 0:
            terms["tv"] = cfg.tv_weight * losses.total_variation(x)
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    def _optimize(self, x, content_t, style_t, callback, cancel, t0) -> Result:
        iterations = self.config.optim.iterations
        optimizer = self._make_optimizer(x)
        last: dict[str, torch.Tensor] = {}
        stop_requested = False

        def request_stop() -> None:
            nonlocal stop_requested
            stop_requested = True

        # The paper's loss values are huge (1e10+ on VGG's 0..255 scale). L-BFGS is scale
        # invariant except where it falls back to a plain gradient step of length lr, which
        # at that scale throws the image to infinity. So the optimizer sees total / S, with
        # S fixed at the first evaluation to make the mean |gradient| one pixel level; the
        # reported losses stay unscaled.
        scale: list[float] = []

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            terms = self._losses(x, content_t, style_t)
            terms["total"].backward()
            if not scale:
                mean_grad = float(x.grad.abs().mean())
                scale.append(1.0 / mean_grad if math.isfinite(mean_grad) and mean_grad > 0 else 1.0)
            x.grad.mul_(scale[0])
            last.clear()
            last.update({k: v.detach() for k, v in terms.items()})
            return terms["total"].detach() * scale[0]

        done = 0
        good = x.detach().clone()
        # the valid pixel range, per channel, in VGG's input space
        lowest = preprocess(torch.zeros(1, 3, 1, 1, device=x.device, dtype=x.dtype))
        highest = preprocess(torch.ones(1, 3, 1, 1, device=x.device, dtype=x.dtype))
        for it in range(1, iterations + 1):
            if cancel is not None and cancel.cancelled:
                raise Cancelled(f"cancelled after {done} of {iterations} iterations")
            optimizer.step(closure)
            with torch.no_grad():
                x.clamp_(lowest, highest)  # projection: see the module docstring
            # one device->host transfer for all terms, not one per term (matters on a GPU)
            values = dict(zip(last, torch.stack(list(last.values())).double().tolist()))
            if not math.isfinite(values["total"]) or not torch.isfinite(x).all():
                raise RunFailed(f"the loss became {values['total']} at iteration {it}; lower the "
                                "learning rate or the loss weights")
            done = it
            good = x.detach()
            if callback is not None:
                callback(Progress(it, iterations, values, time.perf_counter() - t0, good, request_stop))
            if stop_requested:
                break
        # the losses above are those of the iterate before the last step: report the
        # final image's own losses
        with torch.no_grad():
            final = {k: float(v) for k, v in self._losses(x, content_t, style_t).items()}
        elapsed = time.perf_counter() - t0
        image = deprocess(x.detach()).clamp(0, 1).cpu()
        return Result(image, final, done, stop_requested or done < iterations, str(self.device),
                      {"optimize": elapsed, "per_iteration": elapsed / max(done, 1)}, self.precision)


_WEIGHTS: Optional[dict[str, torch.Tensor]] = None
_WEIGHTS_LOCK = threading.Lock()


def _cached_weights() -> dict[str, torch.Tensor]:
    """Decoded VGG weights, loaded once per process (the service builds many Stylizers)."""
    global _WEIGHTS
    with _WEIGHTS_LOCK:
        if _WEIGHTS is None:
            _WEIGHTS = load_weights()
        return _WEIGHTS
