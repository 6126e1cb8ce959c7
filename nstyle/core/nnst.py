"""Neural Neighbor Style Transfer (Kolkin, Kucera, Paris, Sykora, Shechtman, Shakhnarovich,
"Neural Neighbor Style Transfer", 2022), ported to this tool's VGG19: ``--method nnst``.

What it does (after the official code, nkolkin13/NeuralNeighborStyleTransfer, read, not
copied):

- Features: hypercolumns. Ten ReLU layers, each divided by its channel count (so the
  512-channel layers do not rule the distance), resized bilinearly to a quarter of the
  image and concatenated (``hypercolumns``). NNST uses VGG16's relu1_1, 1_2, 2_1, 2_2, 3_1,
  3_2, 3_3, 4_1, 4_2, 4_3 (conv5 dropped); VGG19 has the same blocks with a fourth
  convolution in blocks 3 and 4, so the equivalent layers are those same names
  (``NNST_LAYERS``: the first three convolutions of blocks 3 and 4, relu3_4 and relu4_4
  left out, the network run up to relu4_3). VGG19 here has max pooling, as NNST's VGG16.
- Matching (``nearest_neighbours``): each query hypercolumn is replaced by the painting's
  hypercolumn nearest under the centred cosine distance (each set centred on its own
  mean), once per scale, without gradients. The query is the features of
  0.25 x the current output + 0.75 x the content at that scale (the coarsest: the content
  alone); the output's part takes the content's finest detail level at that scale, as
  NNST does. The painting side optionally adds its 90/180/270-degree rotations
  (``style_rotations`` 4, the default, as NNST's).
- Loss: mean over positions of 1 - cosine(output hypercolumn, its fixed target); no
  content loss.
- Parameterisation and schedule: the output is a Laplacian pyramid (8 levels,
  ``core.pyramid``), optimised by Adam at lr 2e-3 on the levels at and coarser than the
  current scale. Start: the content with its finest levels zeroed (blurred down to the
  coarsest scale: 64 px at 512). Scales 64 -> 128 -> 256 -> 512 px (the output size halved
  down to about 64), 200 steps each, then a final pass at full size in which every layer
  is matched on its own at every step (``final_pass_loss``), on a strided sample of at
  most 64 positions a side with a random offset each step.
- The colour finish (``core.color_finish``) is applied by the caller (``--color-finish``,
  on by default for this method).

Departures, on purpose:
- The official final pass reuses the previous layer's sampled relu3 buffer as the output's
  features for layers it does not subsample (relu4_x at 512 px: the query is the wrong
  layer, reinterpreted as 512 channels). Here every layer's query is its own features:
  subsampled like the painting's when the layer is larger than 64 positions a side, whole
  otherwise.
- The network is this tool's VGG19 (Caffe weights, BGR 0..255 input), not torchvision's
  VGG16; the padding is the run's ``--padding`` (default reflect, which avoids the pale
  bands at the edges that zero padding invites; the official network pads with zeros).
- The nearest-neighbour search is chunked so the distance matrix in memory stays under
  ``SEARCH_CHUNK_BYTES``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from nstyle.core.color_finish import oklab_finish
from nstyle.core.device import is_oom, resolve_precision
from nstyle.core.events import CancelToken, Progress, Result, RunEvents
from nstyle.core.image_tensors import check_image_tensor, resize_tensor
from nstyle.core.pyramid import NNST_LEVELS, LaplacianPyramid, decompose, reconstruct
from nstyle.core.targets import cached_weights
from nstyle.core.vgg import VGG19Features, preprocess
from nstyle.errors import BadOption, Cancelled, OutOfMemory
from nstyle.options.config import Config

NNST_LAYERS = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3",
               "relu4_1", "relu4_2", "relu4_3")
#: NNST's schedule: Adam steps per scale (and in the final pass), learning rate (on [0, 1]
#: RGB pyramid levels), the output's share of the query, the coarsest scale
STEPS = 200
LEARNING_RATE = 2e-3
OUTPUT_SHARE_OF_QUERY = 0.25
COARSEST_SIZE = 64
#: the final pass samples each layer down to at most this many positions a side
FINAL_SAMPLE_SIDE = 64
#: bytes of one chunk of the distance matrix in the nearest-neighbour search
SEARCH_CHUNK_BYTES = 64 * 2 ** 20
_EPS = 1e-8


# --------------------------------------------------------------------------- features


def hypercolumns(features: dict[str, torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
    """(1, C, h/4, w/4): each of ``NNST_LAYERS`` divided by its channels, resized bilinearly
    to a quarter of the image (``image_hw``), concatenated in the layers' order."""
    grid = (max(1, image_hw[0] // 4), max(1, image_hw[1] // 4))
    # divided after the resize, which is linear: the same columns, but the division (and
    # its backward) runs on a sixteenth of relu1_x's positions, not on the whole map
    return torch.cat([F.interpolate(features[layer], size=grid, mode="bilinear", align_corners=True)
                      / features[layer].shape[1] for layer in NNST_LAYERS], 1)


def rotations(image: torch.Tensor, count: int) -> list[torch.Tensor]:
    """``image`` and, with ``count`` 4, its copies turned by 90, 180 and 270 degrees."""
    return [torch.rot90(image, k, dims=(2, 3)) for k in range(count)]


def flat(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) -> (H*W, C)."""
    return x.reshape(x.shape[1], -1).T


def _centred_unit(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(0, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(_EPS)


def centred_cosine_distances(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(Q, R): 1 - the cosine of each query row and each reference row, each set centred on
    its own mean first. The distance written out whole: the search and the final pass find
    its row minima without making it (the tests hold them to it)."""
    return 1 - _centred_unit(queries) @ _centred_unit(references).T


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """(Q,) the index of each query row's nearest reference row (centred cosine distance),
    the distance matrix made in chunks of at most ``SEARCH_CHUNK_BYTES``."""
    return _most_similar(_centred_unit(queries), _centred_unit(references))


@torch.no_grad()
def _most_similar(unit_queries: torch.Tensor, unit_references: torch.Tensor) -> torch.Tensor:
    """(Q,) the index of each unit query row's largest dot product with a unit reference
    row, in chunks of at most ``SEARCH_CHUNK_BYTES`` of the similarity matrix."""
    rows = max(1, SEARCH_CHUNK_BYTES // (4 * unit_references.shape[0]))
    return torch.cat([(chunk @ unit_references.T).argmax(1) for chunk in unit_queries.detach().split(rows)])


def cosine_loss(features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over positions of 1 - cos(feature, target), hypercolumns (1, C, h, w)."""
    f = features / features.norm(dim=1, keepdim=True).clamp_min(_EPS)
    t = targets / targets.norm(dim=1, keepdim=True).clamp_min(_EPS)
    return (1 - (f * t).sum(1)).mean()


def final_pass_loss(output: dict[str, torch.Tensor], style: dict[str, list[torch.Tensor]],
                    generator: torch.Generator) -> torch.Tensor:
    """NNST's last pass: per layer, each output position's centred cosine distance to its
    nearest painting feature at that layer (all rotations), averaged, summed over layers.
    A layer with more than ``FINAL_SAMPLE_SIDE`` positions a side is sampled with a stride
    (the longer side over it) from a random offset, the same for the output and painting.
    """
    total = output[NNST_LAYERS[0]].new_zeros(())
    for layer in NNST_LAYERS:
        out = output[layer]
        side = max(out.shape[-2:])
        stride = side // FINAL_SAMPLE_SIDE if side > FINAL_SAMPLE_SIDE else 1
        dy, dx = torch.randint(stride, (2,), generator=generator).tolist()
        query = _centred_unit(flat(out[..., dy::stride, dx::stride]))
        reference = _centred_unit(torch.cat([flat(s[..., dy::stride, dx::stride]) for s in style[layer]]))
        # the minimum of the distances, taken as: find each query's nearest row without
        # gradients, then the distance to that row with them. Its value and gradient are the
        # minimum's (the gradient of a minimum flows only to the chosen entry), without the
        # whole (Q, R) matrix held for the backward pass or multiplied again in it.
        nearest = reference[_most_similar(query, reference)]
        total = total + (1 - (query * nearest).sum(1)).mean()
    return total


# --------------------------------------------------------------------------- schedule


def scale_levels(size: int) -> list[int]:
    """The pyramid levels the scales run at, coarsest first: the output size halved down to
    about ``COARSEST_SIZE`` (512 px: levels 3, 2, 1, 0, i.e. 64, 128, 256, 512 px)."""
    halvings = max(0, round(math.log2(max(size, 1) / COARSEST_SIZE)))
    return list(range(halvings, -1, -1))


def total_steps(config: Config) -> int:
    """Adam steps of a run: every scale's and the final pass's."""
    counts = config.scale.scale_iterations
    return (counts[0] if counts else STEPS) * (len(scale_levels(config.output_size)) + 1)


@dataclass
class NNSTRun:
    """One NNST run: the network, the images at the output size, the events."""

    vgg: VGG19Features
    content: torch.Tensor  # (1, 3, H, W) RGB in [0, 1] at the output size, on the device
    style: torch.Tensor  # the painting, its longest side the output's
    steps: int
    lr: float
    rotations: int
    events: RunEvents
    generator: torch.Generator
    render: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    scales: int = 1

    def features(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """The layers' features in float32 (the network itself may run in bfloat16)."""
        dtype = next(self.vgg.parameters()).dtype
        return {layer: f.float() for layer, f in self.vgg(preprocess(rgb).to(dtype), NNST_LAYERS).items()}

    @torch.no_grad()
    def style_hypercolumns(self, style: torch.Tensor) -> torch.Tensor:
        return torch.cat([flat(hypercolumns(self.features(s), tuple(s.shape[-2:])))
                          for s in rotations(style, self.rotations)])

    @torch.no_grad()
    def targets(self, query: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The hypercolumns of ``query`` each replaced by its nearest painting hypercolumn."""
        q = hypercolumns(self.features(query), tuple(query.shape[-2:]))
        reference = self.style_hypercolumns(style)
        picked = reference[nearest_neighbours(flat(q), reference)]
        return picked.T.reshape(q.shape)

    def optimise(self, pyramid: LaplacianPyramid, level: int, loss_of: Callable[[torch.Tensor], torch.Tensor],
                 scale: int) -> float:
        """``steps`` Adam steps on the levels ``level`` and coarser; the result is held
        again as levels (as NNST re-decomposes it). Returns the last step's loss."""
        value = float("nan")
        params = pyramid.trainable(level)
        optimizer = torch.optim.Adam(params, lr=self.lr)
        size = max(pyramid.size(level))
        for _ in range(self.steps):
            if self.events.stopped:
                break
            if self.events.cancel is not None and self.events.cancel.cancelled:
                raise Cancelled(f"cancelled after {self.events.done} of {self.events.total} iterations")
            optimizer.zero_grad(set_to_none=True)
            image = pyramid.image(level)
            loss = loss_of(image)
            loss.backward()
            optimizer.step()
            self.events.done += 1
            value = float(loss.detach())
            if self.events.callback is not None:
                self.events.callback(Progress(
                    iteration=self.events.done, iterations=self.events.total,
                    losses={"style.nnst": value, "total": value},
                    elapsed=time.perf_counter() - self.events.t0, image=image.detach().clamp(0, 1).clone(),
                    scale=scale, scales=self.scales, size=size, _stop=self.events.request_stop,
                    _render=self.render))
        with torch.no_grad():
            pyramid.replace(pyramid.image(level), level)
        return value


def stylize(vgg: VGG19Features, content: torch.Tensor, style: torch.Tensor, config: Config,
            callback: Optional[Callable[[Progress], None]] = None, cancel: Optional[CancelToken] = None,
            render: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
            t_start: Optional[float] = None) -> tuple[torch.Tensor, dict[str, float], RunEvents]:
    """NNST's output (1, 3, H, W) RGB, not clamped and not colour-finished, for ``content``
    and ``style`` already at their run sizes and on ``vgg``'s device; its last losses and
    the run's events."""
    check_image_tensor(content, "content image")
    check_image_tensor(style, "style image")
    counts = config.scale.scale_iterations
    steps = counts[0] if counts else STEPS
    levels = scale_levels(max(content.shape[-2:]))
    # ``total_steps`` as the front ends see it
    events = RunEvents(callback, cancel, steps * (len(levels) + 1), t_start or time.perf_counter())
    generator = torch.Generator().manual_seed(config.image.seed)
    run = NNSTRun(vgg, content, style, steps, config.optim.lr or LEARNING_RATE, config.optim.style_rotations,
                  events, generator, render, scales=len(levels) + 1)
    content_levels = decompose(content, NNST_LEVELS)
    style_levels = decompose(style, NNST_LEVELS)
    output = LaplacianPyramid(content_levels)
    output.zero_finest(levels[0])
    last = float("nan")
    for index, level in enumerate(levels, start=1):
        if events.stopped:
            break
        level = min(level, len(content_levels) - 1)
        with torch.no_grad():
            content_here = reconstruct(content_levels[level:])
            if index == 1:
                query = content_here
            else:
                # the output's coarse levels under the content's finest detail at this scale
                output_here = reconstruct([content_levels[level]] + output.levels[level + 1:])
                query = OUTPUT_SHARE_OF_QUERY * output_here + (1 - OUTPUT_SHARE_OF_QUERY) * content_here
            style_here = reconstruct(style_levels[min(level, len(style_levels) - 1):])
            targets = run.targets(query, style_here)

        def hypercolumn_loss(image: torch.Tensor, targets: torch.Tensor = targets) -> torch.Tensor:
            return cosine_loss(hypercolumns(run.features(image), tuple(image.shape[-2:])), targets)

        last = run.optimise(output, level, hypercolumn_loss, index)
    if not events.stopped:
        with torch.no_grad():
            style_features = {layer: [] for layer in NNST_LAYERS}
            for turned in rotations(style, run.rotations):
                for layer, f in run.features(turned).items():
                    style_features[layer].append(f)

        def split_loss(image: torch.Tensor) -> torch.Tensor:
            return final_pass_loss(run.features(image), style_features, generator)

        last = run.optimise(output, 0, split_loss, len(levels) + 1)
    return output.image(0).detach(), {"style.nnst": last, "total": last}, events


def check_inputs(styles: Sequence[torch.Tensor], **unsupported) -> None:
    """One painting and none of the gatys-only inputs, or a one-line refusal."""
    if len(styles) != 1:
        raise BadOption(f"--method nnst takes exactly one style image, got {len(styles)}")
    for name, value in unsupported.items():
        if value is not None:
            raise BadOption(f"--method nnst does not support {name.replace('_', ' ')}; use --method gatys")


def network(config: Config, device: torch.device) -> VGG19Features:
    """VGG19 up to relu4_3 with max pooling (as NNST's VGG16), the run's padding, its
    weights in the dtype of ``precision``."""
    vgg = VGG19Features(NNST_LAYERS[-1], "max", weights=cached_weights(), padding=config.model.padding)
    return vgg.to(device=device, dtype=precision(config, device))


def precision(config: Config, device: torch.device) -> torch.dtype:
    """The network's dtype: bfloat16 only when ``--precision bf16`` is named. auto stays
    float32 here, as NNST was judged (docs/quality.md); the hypercolumns, the matching and
    the loss are float32 either way."""
    return resolve_precision("bf16", device) if config.model.precision == "bf16" else torch.float32


def run(vgg: VGG19Features, config: Config, content: torch.Tensor, style: torch.Tensor,
        callback: Optional[Callable[[Progress], None]] = None, cancel: Optional[CancelToken] = None,
        t_start: Optional[float] = None) -> Result:
    """A whole ``--method nnst`` run (``Stylizer.run`` calls it): ``content`` (any size) at the
    output size, the painting at the output's longest side times ``style_scale``, the colour
    finish of ``--color-finish``; the result on the CPU."""
    t_start = t_start or time.perf_counter()
    device = next(vgg.parameters()).device
    size = config.output_size
    content = resize_tensor(content, size).to(device)
    style = resize_tensor(style, max(1, round(size * config.image.style_scale))).to(device)
    t = time.perf_counter()
    try:
        image, losses, events = stylize(vgg, content, style, config, callback, cancel, t_start=t_start)
    except RuntimeError as exc:
        if is_oom(exc):
            raise OutOfMemory(f"out of memory on {device.type} at size {size}; "
                              "use a smaller --size or another device") from None
        raise
    timings = {"optimize": time.perf_counter() - t}
    image = image.clamp(0, 1)
    if config.color_finish == "oklab":
        image = oklab_finish(image, content, [style])
    timings.update(total=time.perf_counter() - t_start, per_iteration=timings["optimize"] / max(events.done, 1))
    dtype = next(vgg.parameters()).dtype
    return Result(image.cpu(), losses, events.done, events.stopped, str(device), timings, plan=None,
                  precision="bf16" if dtype == torch.bfloat16 else "fp32")
