"""The plan of a run: its scales, iterations, tiles and memory, computed once.

``make`` turns a config and the sizes of the input images into a ``Plan``: the
coarse-to-fine schedule (one ``ScalePlan`` per scale: size, pixels, iterations), the scale
mixing's own step when a fine/coarse style pair is given, and for each step the tile size
that keeps its estimated peak memory under the limit (or ``TooLarge``, before any work).
``Stylizer.plan`` computes it, ``Stylizer.run`` follows it, front ends read it (the total
iterations of a progress bar, a server's bounds, the peak shown to a user) and the run
record stores it (``Plan.to_dict``). ``schedule`` is the part that needs no memory figures
(a server checks a job's work with it before accepting it).

The memory model: only the peak of one tile's forward/backward depends on the tile size;
what grows with the image is a few image-sized buffers, the content targets and L-BFGS's
history. ``estimate_peak`` adds these up; it is calibrated on the CPU and errs high.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from nstyle.core import losses
from nstyle.core.losses import GRAM, StyleLoss
from nstyle.options.config import MIN_SIZE, Config
from nstyle.options.layers import network_share
from nstyle.errors import TooLarge
from nstyle.core.image_tensors import fit_size
from nstyle.core.objective import content_weights, left_out_at_last_scale, style_weights
from nstyle.core.parameterization import variable_share
from nstyle.core.vgg import LAYER_NAMES, halo_for, last_needed_layer, layer_channels, layer_stride

#: automatic tiling keeps the estimated peak under this share of the memory available, so
#: that estimate errors and other programs leave the machine usable
AUTO_TILE_SHARE = 0.75
#: tile cores tried, largest first, when the whole image (0) does not fit
TILE_CHOICES = (0, 1024, 768, 512, 384, 256, 192, 128)
#: bytes the process takes before any image (Python, torch, VGG19 weights up to relu5_1)
BASE_BYTES = 700 * 2 ** 20


@dataclass(frozen=True)
class ScalePlan:
    """One optimization step of the plan: a scale of the schedule, or the scale mixing."""

    size: int  # longest side in pixels
    width: int
    height: int
    iterations: int  # planned
    tile: int = 0  # tile core in pixels, 0 = the whole image at once
    estimated_peak_gib: float = 0.0
    iterations_run: Optional[int] = None  # filled in once it ran (fewer when settled or stopped)
    #: its network's work per pixel against the whole default pass (``layers.network_share``:
    #: the last scale up to relu3_1 0.45), for the run-time estimates
    network_share: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        out = {"size": self.size, "width": self.width, "height": self.height,
               "iterations": self.iterations, "tile": self.tile,
               "estimated_peak_gib": self.estimated_peak_gib}
        if self.network_share != 1.0:
            out["network_share"] = round(self.network_share, 4)
        if self.iterations_run is not None:
            out["iterations_run"] = self.iterations_run
        return out

    def __getitem__(self, key: str) -> Any:
        """The dict form's values (``plan["size"]``), for code written against it."""
        return self.to_dict()[key]


@dataclass(frozen=True)
class Plan:
    """The whole run: ``scales`` smallest first (the last is the output), and ``mix``, the
    step that synthesizes the fine/coarse mixed style image, or None."""

    scales: tuple[ScalePlan, ...]
    mix: Optional[ScalePlan] = None

    @property
    def mixed_styles(self) -> bool:
        return self.mix is not None

    @property
    def total_iterations(self) -> int:
        """Iterations planned over every step: the total a progress bar counts to."""
        return sum(s.iterations for s in self.steps)

    @property
    def steps(self) -> tuple[ScalePlan, ...]:
        """Every step in the order it runs: the mixing first, then the scales."""
        return ((self.mix,) if self.mix is not None else ()) + self.scales

    @property
    def output(self) -> ScalePlan:
        return self.scales[-1]

    @property
    def estimated_peak_gib(self) -> float:
        return max(s.estimated_peak_gib for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as the run record stores it."""
        out: dict[str, Any] = {"scales": [s.to_dict() for s in self.scales],
                               "mixed_styles": self.mixed_styles}
        if self.mix is not None:
            out["mix"] = self.mix.to_dict()
        return out

    def __getitem__(self, key: str) -> Any:
        """The dict form's values (``plan["scales"]``), for code written against it."""
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def ran(self, scales_run: Sequence[Optional[int]], mix_run: Optional[int] = None) -> "Plan":
        """This plan with the iterations each step actually ran (None: not reached)."""
        runs = list(scales_run) + [None] * (len(self.scales) - len(scales_run))
        scales = tuple(dataclasses.replace(s, iterations_run=n) for s, n in zip(self.scales, runs))
        mix = None if self.mix is None else dataclasses.replace(self.mix, iterations_run=mix_run)
        return Plan(scales, mix)


# --------------------------------------------------------------------------- the schedule


def style_size(config: Config, size: int) -> int:
    """The longest side the style images are used at, at a scale of ``size``."""
    return max(16, round(config.image.style_scale * size))


def mix_size(config: Config, coarse_hw: tuple[int, int]) -> int:
    """Where the mixed style image is made: the size the styles are used at the last
    scale, but never larger than the coarse style itself (upsampling adds no detail)."""
    return max(MIN_SIZE, min(style_size(config, config.output_size), max(coarse_hw)))


def schedule(config: Config, content_hw: tuple[int, int],
             coarse_hw: Optional[tuple[int, int]] = None) -> Plan:
    """The steps' sizes and iterations, without tiles or memory figures. ``coarse_hw``:
    (height, width) of the coarse style, when the styles are mixed. Raises ``BadOption``
    for options the style loss cannot run with (every front end schedules before work)."""
    losses.get(config.loss.style_loss).check(config.memory.tile_size, config.loss.explicit_coarse_only_layers,
                                             config.loss.style_balance)
    ch, cw = content_hw
    scales = []
    count = len(config.scale_sizes)
    for index, (size, iterations) in enumerate(zip(config.scale_sizes, config.scale_iteration_counts), 1):
        w, h = fit_size(cw, ch, size)
        layers, _ = layers_read(config, index, count)
        scales.append(ScalePlan(size, w, h, iterations, network_share=network_share(layers)))
    mix = None
    if coarse_hw is not None:
        size = mix_size(config, coarse_hw)
        w, h = fit_size(coarse_hw[1], coarse_hw[0], size)
        mix = ScalePlan(size, w, h, config.scale.mix_iterations,
                        network_share=network_share(config.scale.fine_layers))
    return Plan(tuple(scales), mix)


def layers_read(config: Config, index: int, count: int) -> tuple[list[str], list[str]]:
    """(every layer, the content layers) the ``index``-th of ``count`` scales reads: the
    last of several leaves out ``left_out_at_last_scale``."""
    loss = config.loss
    left_out = left_out_at_last_scale(loss) if 1 < index == count else ()
    content_layers = [layer for layer in content_weights(loss) if layer not in left_out]
    style_layers = [layer for layer in style_weights(loss) if layer not in left_out]
    return list(dict.fromkeys(content_layers + style_layers)), content_layers


def make(config: Config, content_hw: tuple[int, int], style_hws: Sequence[tuple[int, int]] = (),
         mix_hws: Optional[tuple[tuple[int, int], tuple[int, int]]] = None,
         device: Optional[torch.device] = None) -> Plan:
    """The full plan. ``style_hws``: (height, width) of the images style targets are made
    from; ``mix_hws``: those of the (fine, coarse) styles when they are mixed; ``device``:
    where it runs (the memory available there is the limit, unless ``memory_limit`` is set).
    Raises ``TooLarge`` when a step cannot fit even tiled."""
    memory_limit = config.memory.memory_limit
    limit = int(memory_limit * 2 ** 30) if memory_limit else available_memory(device)
    base = schedule(config, content_hw, mix_hws[1] if mix_hws is not None else None)
    loss, optim = config.loss, config.optim
    scales = []
    for index, step in enumerate(base.scales, start=1):
        layers, content_layers = layers_read(config, index, len(base.scales))
        shw = max((fit_size(sw, sh, style_size(config, step.size))[::-1] for sh, sw in style_hws),
                  key=lambda t: t[0] * t[1], default=(0, 0))
        history = min(optim.history_size, step.iterations) if optim.optimizer == "lbfgs" else 0
        scales.append(fit_memory(step, config, layers, content_layers, history, shw, limit,
                                 losses.get(loss.style_loss), variable_share(optim.parameterization)))
    mix = None if mix_hws is None else _fit_mix(base.mix, config, mix_hws[0], limit)
    return Plan(tuple(scales), mix)


def mix_step(config: Config, fine_hw: tuple[int, int], coarse_hw: tuple[int, int],
             device: Optional[torch.device] = None) -> ScalePlan:
    """The scale mixing's step alone (``Stylizer.mix_scales`` outside a run)."""
    memory_limit = config.memory.memory_limit
    limit = int(memory_limit * 2 ** 30) if memory_limit else available_memory(device)
    return _fit_mix(schedule(config, coarse_hw, coarse_hw).mix, config, fine_hw, limit)


def _fit_mix(step: ScalePlan, config: Config, fine_hw: tuple[int, int], limit: int) -> ScalePlan:
    """The mixing's memory: its network runs to the fine layers, its style is the fine image
    at the step's size."""
    history = min(config.optim.history_size, step.iterations) if config.optim.optimizer == "lbfgs" else 0
    return fit_memory(step, config, list(config.scale.fine_layers), [], history,
                      fit_size(fine_hw[1], fine_hw[0], step.size)[::-1], limit)


def fit_memory(step: ScalePlan, config: Config, layers: Sequence[str], content_layers: Sequence[str],
               history: int, style_hw: tuple[int, int], limit: int, style_loss: StyleLoss = GRAM,
               share: float = 1.0) -> ScalePlan:
    """``step`` with the tile that fits it in ``limit`` bytes (``tile_size`` when given) and
    its estimated peak. ``layers``: what the step's network runs to; ``history``: L-BFGS pairs;
    ``style_hw``: the largest style image at this step; ``style_loss``: its memory beyond the
    network's, and whether it can be tiled (else the step runs whole or is refused); ``share``:
    the optimizer's variable in images (``parameterization.variable_share``)."""
    last = last_needed_layer(layers) if layers else "relu1_1"
    halo = halo_for([last])
    h, w = step.height, step.width
    untiled = not style_loss.tiles
    extra = style_loss.extra_bytes(h, w, layers, style_hw)

    def peak(tile: int) -> int:
        return extra + estimate_peak(h, w, last_layer=last, content_layers=content_layers,
                                     tile=tile, halo=halo, history=history, style_hw=style_hw,
                                     variable_share=share)

    forced = config.memory.tile_size
    if untiled:
        tile = 0
        if peak(0) > limit:
            raise TooLarge(f"a {w}x{h} output needs about {peak(0) / 2 ** 30:.1f} GiB (estimated), "
                           f"more than the {limit / 2 ** 30:.1f} GiB available, and "
                           + style_loss.untiled_reason.replace(f"style_loss {style_loss.name} ", "it "))
    elif forced is not None:
        tile = forced
    else:  # the whole image if it fits with room to spare, else the largest tile
        tile = next((t for t in TILE_CHOICES if peak(t) <= AUTO_TILE_SHARE * limit),
                    next((t for t in TILE_CHOICES if peak(t) <= limit), TILE_CHOICES[-1]))
        if tile and tile + 2 * halo >= max(h, w):
            tile = 0  # a single tile would be the whole image
    need = peak(tile)
    if need > limit:
        raise TooLarge(
            f"a {w}x{h} output needs about {need / 2 ** 30:.1f} GiB (estimated), more than the "
            f"{limit / 2 ** 30:.1f} GiB {'allowed by --memory-limit' if config.memory.memory_limit else 'available'}"
            f"; use a smaller --size, fewer iterations or --history-size at that scale, or --tile-size 256")
    return dataclasses.replace(step, tile=tile, estimated_peak_gib=round(need / 2 ** 30, 2))


# --------------------------------------------------------------------------- memory


def available_memory(device: Optional[torch.device] = None) -> int:
    """Bytes of memory a run on ``device`` may still take: free GPU memory on CUDA, else
    MemAvailable on Linux (all physical memory on other Unixes)."""
    if device is not None and device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # other Unixes: all physical memory, the best we can cheaply know
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2 ** 30


def network_bytes(height: int, width: int, last_layer: str, backward: bool) -> int:
    """Peak bytes of one forward (and backward) pass of a height x width image.

    Forward with gradients keeps every conv and relu output; backward needs about two of the
    largest activation at once on top. Without gradients only a few activations live at a
    time. Calibrated against measured peaks on CPU (it errs on the high side).
    """
    sizes = []
    for name in LAYER_NAMES[: LAYER_NAMES.index(last_layer) + 1]:
        s = layer_stride(name)
        sizes.append(layer_channels(name) * (height // s or 1) * (width // s or 1) * 4)
    if backward:
        return int(1.25 * (sum(sizes) + 3 * max(sizes)))
    return int(1.25 * 3 * max(sizes))


def image_bytes(height: int, width: int) -> int:
    return 3 * height * width * 4


def estimate_peak(height: int, width: int, *, last_layer: str, content_layers: Sequence[str],
                  tile: int, halo: int, history: int, style_hw: tuple[int, int],
                  variable_share: float = 1.0) -> int:
    """Estimated peak bytes of optimizing an image of (height, width) at one scale.

    tile: the core size (0 = the whole image in one pass); history: L-BFGS pairs kept (0
    for the other optimizers); style_hw: the size the style images are run at;
    variable_share: the optimizer's variable in images (4/3 for a pyramid).
    """
    if tile:
        win = (min(height, tile + 2 * halo), min(width, tile + 2 * halo))
        net = network_bytes(*win, last_layer, backward=True)
        style_net = network_bytes(min(style_hw[0], tile + 2 * halo),
                                  min(style_hw[1], tile + 2 * halo), last_layer, backward=False)
    else:
        net = network_bytes(height, width, last_layer, backward=True)
        style_net = network_bytes(*style_hw, last_layer, backward=False)
    img = image_bytes(height, width)
    # x, its grad, the content image, the kept best copy, the composed image and its grad,
    # L-BFGS's direction and previous gradient, the masks, plus two per history pair
    # (all counted at the variable's size: errs high for those of image size)
    buffers = int((10 + 2 * history) * img * variable_share)
    targets = sum(layer_channels(l) * (height // layer_stride(l)) * (width // layer_stride(l)) * 4
                  for l in content_layers)
    return BASE_BYTES + max(net, style_net) + buffers + targets

