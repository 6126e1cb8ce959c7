"""The optimization loop: the image (its pixels, or by default its Laplacian pyramid) is the
only variable.

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
- L-BFGS moves the levels of a Laplacian pyramid of the image, not its pixels, unless
  ``parameterization`` is pixels (``core.parameterization``; a video's later frames always
  move pixels).
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

import dataclasses
import time
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from nstyle.core import color, nnst, parameterization, regions
from nstyle.core.color_finish import oklab_finish
from nstyle.core.device import is_oom, resolve_device
from nstyle.core.events import CancelToken, Progress, Result, RunEvents, TemporalTarget, check_temporal
from nstyle.core.image_tensors import check_image_tensor, fit_size, hw, resize_tensor
from nstyle.core.mixing import mix
from nstyle.core.objective import Objective, TemporalTerm, balance, for_scale, left_out_at_last_scale
from nstyle.core.optimizer import Step, optimize, step_tiles
from nstyle.core.plan import Plan, ScalePlan, make as make_plan, mix_step
from nstyle.core.targets import StyleTargets, TargetMaker
from nstyle.core.vgg import VGG19Features, deprocess, preprocess
from nstyle.errors import BadOption, OutOfMemory
from nstyle.options.config import Config

# re-exported: a run's events and results are the engine's vocabulary
__all__ = ["CancelToken", "Progress", "Result", "Stylizer", "StyleTargets", "TemporalTarget"]


class Stylizer:
    """Runs Gatys et al.'s optimization for one ``Config``; reusable across runs."""

    def __init__(self, config: Config, device: Optional[torch.device] = None,
                 style_targets: Optional[StyleTargets] = None, refines: bool = False) -> None:
        self.config = config
        self.refines = refines  # runs start settled (a video's later frames): one scale = the last
        self.device = device or resolve_device(config.model.device)
        #: the network and the targets it computes (``style_targets``: shared with other
        #: runs and processes; None: each Stylizer computes its own)
        self.network = TargetMaker(config, self.device, style_targets)
        self.precision = "bf16" if self.network.dtype == torch.bfloat16 else "fp32"
        self._nnst_vgg: Optional[VGG19Features] = None  # made by the first --method nnst run

    @property
    def vgg(self) -> Optional[VGG19Features]:
        """The float32 network (None when no loss needs one)."""
        return self.network.vgg

    @property
    def loop_vgg(self) -> Optional[VGG19Features]:
        """The network the optimization loop runs (a bfloat16 copy with precision bf16)."""
        return self.network.loop_vgg

    @property
    def shared_targets(self) -> Optional[StyleTargets]:
        """Style targets shared with other runs and processes (None: computed per run)."""
        return self.network.shared_targets

    @shared_targets.setter
    def shared_targets(self, targets: Optional[StyleTargets]) -> None:
        self.network.shared_targets = targets  # a batch worker's Stylizer serves many batches

    # ---- the plan --------------------------------------------------------------------

    def plan(self, content: torch.Tensor, styles: Sequence[torch.Tensor] = (), *,
             fine_style: Optional[torch.Tensor] = None,
             coarse_style: Optional[torch.Tensor] = None) -> Plan:
        """The plan ``run`` follows for these images (only their sizes matter): scales,
        iterations, tiles and estimated memory. Raises ``TooLarge`` when a step cannot fit
        in ``memory_limit`` (default: the memory available now) even tiled."""
        style_hws = [hw(s) for s in styles] + ([hw(coarse_style)] if coarse_style is not None else [])
        mix_hws = None if fine_style is None or coarse_style is None else (hw(fine_style), hw(coarse_style))
        return make_plan(self.config, hw(content), style_hws, mix_hws, self.device)

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
            check_image_tensor(init_image, "init image")
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
        styles, masks = checked_inputs(content, styles, style_masks, keep_mask, fine_style, coarse_style,
                                       needs_style=bool(self.network.style_weights))
        check_temporal(temporal)
        if self.config.optim.method == "nnst":
            nnst.check_inputs(styles, init_image=init_image, style_masks=style_masks, keep_mask=keep_mask,
                              fine_style=fine_style, temporal=temporal)
            if self._nnst_vgg is None:
                self._nnst_vgg = nnst.network(self.config, self.device)
            return nnst.run(self._nnst_vgg, self.config, content.float(), styles[0], callback, cancel, t_start)
        mixing = fine_style is not None
        if plan is None:
            plan = self.plan(content, styles, fine_style=fine_style, coarse_style=coarse_style)
        else:
            self._check_plan(plan, content, mixing)
        events = RunEvents(callback, cancel, plan.total_iterations, t_start)
        timings: dict[str, float] = {}
        mix_run = mixed = None
        try:
            if mixing:
                t = time.perf_counter()
                mixed, mix_run = mix(self.network, self.config, fine_style.float(), coarse_style.float(),
                                     plan.mix, events)
                styles, masks = styles + [mixed], masks + [None]
                timings["mix"] = time.perf_counter() - t
            x, result_losses, scales_run = self._run_scales(content.float(), styles, masks, keep_mask,
                                                            init_image, plan, events, timings, temporal)
        except RuntimeError as exc:
            if is_oom(exc):
                raise OutOfMemory(f"out of memory on {self.device.type} at size {self.config.output_size}; "
                                  "use a smaller --size, --tile-size or another device") from None
            raise
        image = self._finish(x, plan, content.float(), styles)
        elapsed = time.perf_counter() - t_start
        timings.update(total=elapsed, per_iteration=timings.get("optimize", 0.0) / max(events.done, 1))
        return Result(image, result_losses, events.done, events.stopped, str(self.device), timings,
                      plan=plan.ran(scales_run, mix_run), precision=self.precision, mixed_style=mixed)

    def _finish(self, x: torch.Tensor, plan: Plan, content: torch.Tensor,
                styles: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """The last image as the user gets it: RGB on the CPU, the output's size, colours
        finished (``--preserve-colors``, ``--color-finish``)."""
        image = deprocess(x.detach()).clamp(0, 1).cpu()
        out = plan.output
        if tuple(image.shape[-2:]) != (out.height, out.width):
            # stopped before the last scale: still the requested size
            image = F.interpolate(image, size=(out.height, out.width),
                                  mode="bicubic", align_corners=False).clamp(0, 1)
        return finish_colors(self.config, image, content, styles)

    def _run_scales(self, content: torch.Tensor, styles: list[torch.Tensor],
                    masks: list[Optional[torch.Tensor]], keep_mask: Optional[torch.Tensor],
                    init_image: Optional[torch.Tensor], plan: Plan, events: RunEvents,
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
            step.render = preview_renderer(self.config.color.preserve_colors,
                                           resize_tensor(content, scale.size))
            t = time.perf_counter()
            x, final, ran = optimize(self.network, start, step, events, self.config.optim)
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
                    ) -> Step:
        """One scale of the schedule, its targets made: what ``optimize`` needs."""
        content_bgr = preprocess(resize_tensor(content, scale.size).to(self.device))
        h, w = content_bgr.shape[-2:]
        keep = None if keep_mask is None else regions.resize_mask(keep_mask.float(), h, w).to(self.device)
        factors = balance((plan.output.height, plan.output.width), (h, w), self.config.loss.balance_size)
        style = self.network.style_regions(styles, masks, keep, scale.size, h, w, scale.tile,
                                           apart=None if temporal is None else temporal.new_ground)
        last = index == len(plan.scales) and (index > 1 or self.refines)
        left_out = left_out_at_last_scale(self.config.loss) if last else ()
        objective = for_scale(self.config.loss, self.network.content_targets(content_bgr, scale.tile, left_out),
                              style, positions_factor=factors.content, pixels_factor=factors.pixels,
                              left_out=left_out)
        if temporal is not None and temporal.weight > 0:
            objective = dataclasses.replace(objective, temporal=self._temporal_term(temporal, h, w, factors.pixels))
        # a video's later frames refine a warped, already painted frame: on pixels, as judged
        # (with the pyramid the few pixels of new ground a pan uncovers took less of the style)
        moves = "pixels" if self.refines else self.config.optim.parameterization
        return Step(scale, objective, content_bgr, keep, step_tiles(h, w, scale.tile, objective),
                    self.config.optim.tolerance, index=index, count=len(plan.scales),
                    parameterization=parameterization.make(moves))

    def _matched(self, step: Step, start: torch.Tensor) -> Objective:
        """``step``'s objective with its style targets matched to the image the step starts
        from, for a loss that matches them per scale (``StyleLoss.rematches_per_scale``)."""
        objective = step.objective
        if not objective.rematches:
            return objective
        image = regions.compose(start, step.content_bgr, step.keep)
        layers = [layer for t in objective.style for layer in t.layers]
        features = self.network.features(image, layers)
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

    def mix_scales(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """The paper's scale mixing: a new style image with ``fine``'s small-scale texture and
        ``coarse``'s large-scale structure (RGB (1, 3, H, W) in [0, 1], on the CPU).

        Starting from ``coarse``, only the Gram matrices of the lower layers
        (``fine_layers``) are matched to ``fine``'s; the deeper layers, never asked to change,
        keep the coarse image's arrangement. Made at the size the styles are used at the
        last scale, but never larger than ``coarse`` itself (upsampling adds no detail).
        """
        step = mix_step(self.config, hw(fine), hw(coarse), self.device)
        events = RunEvents(None, None, step.iterations, time.perf_counter())
        return mix(self.network, self.config, fine.float(), coarse.float(), step, events)[0]


def preview_renderer(mode: str, content_rgb: torch.Tensor
                     ) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """How a progress preview is coloured: ``--preserve-colors``' finishing applied to it
    (None: shown as optimized)."""
    if mode not in ("luminance", "swap"):
        return None
    original = content_rgb.cpu()
    return lambda rgb: color.finish(mode, rgb.cpu(), original)


def finish_colors(config: Config, image: torch.Tensor, content: torch.Tensor,
                  styles: Sequence[torch.Tensor]) -> torch.Tensor:
    """``--preserve-colors``' finishing, then ``--color-finish`` (content and paintings brought
    to the output's size here)."""
    content = resize_tensor(content, config.output_size)
    image = color.finish(config.color.preserve_colors, image, content)
    if config.color_finish == "oklab" and styles:
        image = oklab_finish(image, content, [resize_tensor(s, config.output_size) for s in styles])
    return image


def checked_inputs(content, styles, style_masks, keep_mask, fine_style, coarse_style, needs_style: bool
                   ) -> tuple[list[torch.Tensor], list[Optional[torch.Tensor]]]:
    """The styles (as float32) and one mask or None per style, after checking every input."""
    check_image_tensor(content, "content image")
    styles = [s.float() for s in styles]
    for i, s in enumerate(styles):
        check_image_tensor(s, f"style image {i + 1}")
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
        check_image_tensor(fine_style, "fine style image")
        check_image_tensor(coarse_style, "coarse style image")
    if needs_style and not styles and fine_style is None:
        raise BadOption("style_weight > 0 but no style image was given")
    return styles, masks
