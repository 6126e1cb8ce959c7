"""What the network sees: its units, an image's activations, the paper's reconstructions.

    fig = nstyle.tasks.explore.units("relu3_1", channels=range(16))         # a Figure
    fig = nstyle.tasks.explore.activations("photo.jpg", "relu2_1", top=16)
    fig = nstyle.tasks.explore.reconstructions("photo.jpg", style_image="painting.jpg")
    fig.save("fig.png")                                               # + fig.png.json

- ``units``: for each channel an image synthesized from noise to excite it (activation
  maximisation, as in Zeiler & Fergus / Olah et al.): gradient ascent on the channel's mean
  activation, kept readable by random jitter, a light blur every few steps and a
  coarse-to-fine schedule, the pixels clamped to the valid range.
- ``activations``: an image's strongest feature maps at one layer as heat maps over it,
  and for a few of those channels the image patches (each unit's receptive field) that
  excite them most.
- ``reconstructions``: Gatys et al.'s figure 1 in one grid: content reconstructed from
  conv1_1 ... conv5_1, style from conv1_1, conv1_1-conv2_1, ... up to conv5_1, with
  average pooling as in the paper. Each cell is an ordinary ``Stylizer`` run with the
  same options as ``nstyle reconstruct`` (``nstyle.cli.main.RECONSTRUCT_DEFAULTS``).

Every function returns a ``grid.Figure`` (a labelled picture and a run record) and
raises ``BadOption``/``BadImage`` for bad input; nothing here prints or writes files.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from nstyle.options.config import Config
from nstyle.core.events import CancelToken
from nstyle.core.stylizer import Stylizer
from nstyle.core.image_tensors import resize_tensor
from nstyle.core.device import resolve_device
from nstyle.errors import BadOption
from nstyle.io.grid import Cell, Figure, Grid
from nstyle.io.images import ImageSource, load_image, to_pil, to_tensor
from nstyle.io.inputs import describe
from nstyle.io.record import versions
from nstyle.core.vgg import layer_stride, receptive_radius
from nstyle.core.vgg import VGG19Features, check_layer_names, deprocess, layer_channels, load_weights, preprocess

#: the layers of the paper's figure 1
PAPER_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
#: the figure's defaults: the paper synthesized with average pooling; every cell starts
#: from the same noise; a tolerance of 0 because from noise early steps can be small
FIGURE_DEFAULTS = {"pooling": "avg", "size": 256, "iterations": 200, "init": "noise",
                   "tv_weight": 0.0, "tolerance": 0.0}
#: activation maximisation: most channels in one figure, and images per network pass
MAX_UNITS, UNIT_BATCH = 64, 16
#: a callable told (steps done, steps in all) as the work goes on, for a progress bar
StepCallback = Callable[[int, int], None]


# --------------------------------------------------------------------------- choices


def parse_channels(spec: Any, layer: str) -> list[int]:
    """'0-15', '3,7,12-14', an int or a sequence of ints -> channel indices of ``layer``,
    each checked against the layer's channel count."""
    check_layer_names([layer])
    n = layer_channels(layer)
    if isinstance(spec, str):
        channels: list[int] = []
        for part in [p.strip() for p in spec.split(",")]:
            m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
            if not m:
                raise BadOption(f"channels: {part!r} is not a channel or a range such as 0-15")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise BadOption(f"channels: the range {part!r} runs backwards")
            if hi >= n:
                raise BadOption(f"channel {hi} is out of range: {layer} has channels 0..{n - 1}")
            channels += range(lo, hi + 1)
    else:
        channels = [spec] if isinstance(spec, int) else list(spec)
    if not channels:
        raise BadOption("channels: give at least one channel, such as 0-15")
    for c in channels:
        if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or not 0 <= c < n:
            raise BadOption(f"channel {c} is out of range: {layer} has channels 0..{n - 1}")
    if len(channels) > MAX_UNITS:
        raise BadOption(f"{len(channels)} channels in one figure; at most {MAX_UNITS} (make several)")
    return [int(c) for c in dict.fromkeys(channels)]


def network_for(layer: str, config: Config) -> tuple[VGG19Features, torch.device]:
    device = resolve_device(config.model.device)
    net = VGG19Features(layer, config.model.pooling, weights=load_weights(),
                        padding=config.model.padding).to(device)
    if device.type == "cpu":  # as in the engine: oneDNN skips a reorder around every conv
        net.to(memory_format=torch.channels_last)
    return net, device


def _base_record(kind: str, config: Config, device: torch.device) -> dict[str, Any]:
    return {"kind": kind, "config": config.to_dict(), "seed": config.image.seed,
            "device": str(device), "versions": versions()}


# --------------------------------------------------------------------------- units


def units(layer: str, channels: Any = "0-15", config: Optional[Config] = None, *,
          on_step: Optional[StepCallback] = None, **options: Any) -> Figure:
    """Images that excite each of ``layer``'s ``channels``, as a labelled grid.

    ``config``/``options``: ``size`` (each image's side, default 128 here), ``iterations``
    (gradient steps over the whole coarse-to-fine schedule, default 120 here), ``lr``
    (default 4 pixel levels per step), ``seed``, ``pooling``, ``padding``, ``device``.
    """
    config = Config.from_options(config or Config.from_options(size=128, iterations=120), **options)
    chosen = parse_channels(channels, layer)
    net, device = network_for(layer, config)
    t0 = time.perf_counter()
    size, steps = config.image.size, config.optim.iterations
    images, gains = [], []
    batches = [chosen[i:i + UNIT_BATCH] for i in range(0, len(chosen), UNIT_BATCH)]
    done = [0]

    def progress() -> None:
        done[0] += 1
        if on_step is not None:
            on_step(done[0], steps * len(batches))

    for k, batch in enumerate(batches):
        x = maximise(net, layer, batch, size, steps, seed=config.image.seed + k,
                     lr=config.optim.lr or 4.0, device=device, on_step=progress)
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(config.image.seed + k))
        gains += zip(batch, channel_means(net, layer, noise.to(device), batch),
                     channel_means(net, layer, x, batch))
        images += [to_pil(img) for img in x]
    grid = Grid(title=f"{layer}: images that excite each channel ({config.model.pooling} pooling)")
    cells = [Cell(img, f"{layer} ch {c}") for img, c in zip(images, chosen)]
    columns = min(8, len(cells))
    for i in range(0, len(cells), columns):
        grid.add_row(cells[i:i + columns])
    record = _base_record("explore.units", config, device)
    record.update(layer=layer, channels=chosen, layout=grid.layout(), timings={"total": round(time.perf_counter() - t0, 3)},
                  mean_activation=[{"channel": c, "noise": round(a, 4), "synthesized": round(b, 4)}
                                   for c, a, b in gains])
    return Figure(grid.render(cell=max(64, min(size, 160))), record)


@torch.no_grad()
def channel_means(net: VGG19Features, layer: str, rgb: torch.Tensor, channels: Sequence[int]) -> list[float]:
    """Mean activation of ``channels[i]`` at ``layer`` for RGB image ``rgb[i]`` (in [0, 1])."""
    act = net(preprocess(rgb.float()), [layer])[layer]
    idx = torch.as_tensor(list(channels), device=act.device)
    return act[torch.arange(len(channels), device=act.device), idx].mean(dim=(1, 2)).tolist()


def maximise(net: VGG19Features, layer: str, channels: Sequence[int], size: int, steps: int, *,
             seed: int = 0, lr: float = 4.0, device: Optional[torch.device] = None,
             on_step: Optional[Callable[[], None]] = None) -> torch.Tensor:
    """One image per channel (a batch), each optimized to raise its channel's mean
    activation; returns RGB images in [0, 1] of shape (len(channels), 3, size, size).

    Unregularised ascent makes high-frequency noise that excites a unit without looking
    like anything; so: the image is shifted by a random jitter before every step (what
    survives must work at every position), blurred lightly every few steps, and grown from
    a quarter of the size (coarse shapes first, detail last)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = sorted({max(16, size // 4), max(16, size // 2), size})
    # the coarse scales are cheap: give them as many steps as the finest one
    counts = [max(1, steps // len(sizes))] * len(sizes)
    counts[-1] += steps - sum(counts)
    x = preprocess(0.5 + 0.1 * torch.randn(len(channels), 3, sizes[0], sizes[0], generator=gen))
    x = x.to(device or torch.device("cpu"))
    lowest = preprocess(torch.zeros(1, 3, 1, 1, device=x.device))
    highest = preprocess(torch.ones(1, 3, 1, 1, device=x.device))
    idx = torch.as_tensor(list(channels), device=x.device)
    rows = torch.arange(len(channels), device=x.device)
    for s, n in zip(sizes, counts):
        if x.shape[-1] != s:
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False)
        x = x.detach().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        jitter = max(1, s // 16)
        for step in range(n):
            dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
            act = net(torch.roll(x, (dy, dx), (2, 3)), [layer])[layer]
            score = act[rows, idx].mean(dim=(1, 2))
            opt.zero_grad(set_to_none=True)
            (-score.sum()).backward()
            opt.step()
            with torch.no_grad():
                if step % 4 == 3:
                    x.copy_(_blur(x))
                x.clamp_(lowest, highest)
            if on_step is not None:
                on_step()
    return deprocess(x.detach()).clamp(0, 1)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """A light 3x3 binomial blur per channel (reflect-padded)."""
    k1 = torch.tensor([1.0, 2.0, 1.0], device=x.device, dtype=x.dtype) / 4
    kernel = (k1[:, None] * k1[None, :]).expand(3, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=3)


# --------------------------------------------------------------------------- activations


#: heat-map colours from low to high (black, purple, red, orange, pale yellow: like
#: matplotlib's 'inferno', which nstyle does not depend on)
HEAT_COLOURS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                        dtype=np.float32)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) -> uint8 RGB (H, W, 3)."""
    stops = np.linspace(0.0, 1.0, len(HEAT_COLOURS))
    out = np.stack([np.interp(values, stops, HEAT_COLOURS[:, c]) for c in range(3)], axis=-1)
    return out.round().astype(np.uint8)


def activations(image: ImageSource, layer: str, top: int = 16, config: Optional[Config] = None, *,
                patch_channels: int = 4, patches: int = 6, **options: Any) -> Figure:
    """``image``'s ``top`` strongest channels at ``layer`` (by mean activation) as heat maps
    over it, and, for the first ``patch_channels`` of them, the ``patches`` image patches
    (receptive fields) where each responds most. ``config``/``options``: ``size`` (the
    image's longest side, default 256 here), ``pooling``, ``padding``, ``device``."""
    config = Config.from_options(config or Config.from_options(size=256), **options)
    check_layer_names([layer])
    n = layer_channels(layer)
    if not isinstance(top, int) or not 1 <= top <= min(n, MAX_UNITS):
        raise BadOption(f"top must be an integer in 1..{min(n, MAX_UNITS)} for {layer}, got {top!r}")
    if not isinstance(patch_channels, int) or not 0 <= patch_channels <= top:
        raise BadOption(f"patch_channels must be an integer in 0..{top}, got {patch_channels!r}")
    if not isinstance(patches, int) or not 1 <= patches <= 16:
        raise BadOption(f"patches must be an integer in 1..16, got {patches!r}")
    t0 = time.perf_counter()
    original = load_image(image, "image")
    rgb = resize_tensor(to_tensor(original), config.image.size)
    net, device = network_for(layer, config)
    with torch.no_grad():
        act = net(preprocess(rgb.to(device)), [layer])[layer][0].float().cpu()
    means = act.mean(dim=(1, 2))
    order = torch.argsort(means, descending=True)[:top].tolist()
    picture = to_pil(rgb)
    grid = Grid(title=f"{layer}: the {top} strongest of {n} channels over this image "
                      f"({config.model.pooling} pooling)")
    maps = [Cell(_overlay(picture, act[c]), f"ch {c}  mean {means[c]:.3g}") for c in order]
    columns = min(8, len(maps))
    for i in range(0, len(maps), columns):
        grid.add_row(maps[i:i + columns])
    found = []
    for c in order[:patch_channels]:
        boxes = strongest_patches(act[c], layer, picture.size, patches)
        found.append({"channel": c, "boxes": boxes})
        # cut from the original: sharper than the network's copy where that is smaller
        scale = original.width / picture.width
        grid.add_row([Cell(original.crop(tuple(round(v * scale) for v in b))) for b in boxes],
                     label=f"ch {c}\npatches")
    record = _base_record("explore.activations", config, device)
    record.update(inputs={"image": describe(image)}, layer=layer, top=top,
                  channels=[{"channel": c, "mean": round(float(means[c]), 4)} for c in order],
                  patches=found, timings={"total": round(time.perf_counter() - t0, 3)})
    return Figure(grid.render(cell=max(64, min(config.image.size, 160))), record)


def _overlay(picture: Image.Image, fmap: torch.Tensor) -> Image.Image:
    """One feature map, normalised to its own peak, as colour over the grey image."""
    peak = float(fmap.max())
    values = (fmap / peak if peak > 0 else torch.zeros_like(fmap))[None, None]
    values = F.interpolate(values, size=picture.size[::-1], mode="bilinear", align_corners=False)
    heat = Image.fromarray(heat_colours(values[0, 0].clamp(0, 1).numpy()))
    grey = picture.convert("L").convert("RGB")
    return Image.blend(grey, heat, 0.6)


def strongest_patches(fmap: torch.Tensor, layer: str, image_size: tuple[int, int], count: int
                      ) -> list[tuple[int, int, int, int]]:
    """Boxes (left, top, right, bottom) in image pixels around the ``count`` strongest
    positions of one feature map, none centred inside another's box (so they differ). A
    box is the unit's receptive field, at most half the image's shorter side."""
    width, height = image_size
    stride = layer_stride(layer)
    side = max(8, min(2 * receptive_radius(layer) + stride, min(width, height) // 2))
    values = fmap.flatten().clone()
    fw = fmap.shape[1]
    boxes: list[tuple[int, int, int, int]] = []
    while len(boxes) < count and bool(torch.isfinite(values).any()):
        k = int(torch.argmax(values))
        if values[k] <= 0 and boxes:
            break  # the rest of the map is silent
        cy, cx = (k // fw + 0.5) * stride, (k % fw + 0.5) * stride
        left = int(min(max(0, cx - side / 2), width - side))
        top = int(min(max(0, cy - side / 2), height - side))
        boxes.append((left, top, left + side, top + side))
        ys = (torch.arange(fmap.shape[0]) + 0.5) * stride
        xs = (torch.arange(fw) + 0.5) * stride
        near = ((ys[:, None] - cy).abs() < side / 2) & ((xs[None, :] - cx).abs() < side / 2)
        values[near.flatten()] = float("-inf")
    return boxes


# --------------------------------------------------------------------------- reconstructions


def reconstruction_config(mode: str, base: Config, layers: Sequence[str]) -> Config:
    """The config of one reconstruction, as 'nstyle reconstruct MODE' runs it: only the
    mode's term, from ``layers``; several style layers weigh the same, as in the paper."""
    if mode == "content":
        return Config.from_options(base, style_weight=0.0, content_layers=tuple(layers),
                                   content_layer_weights=None, content_weight=base.loss.content_weight or 1.0)
    n = len(layers)
    return Config.from_options(base, content_weight=0.0, style_layers=tuple(layers),
                               style_layer_weights=[1.0 / n] * n, style_weight=base.loss.style_weight or 1.0)


def figure_config(**options: Any) -> Config:
    """The paper figure's config: ``FIGURE_DEFAULTS`` under the caller's options."""
    return Config.from_options(**{**FIGURE_DEFAULTS, **options})


def reconstructions(image: ImageSource, config: Optional[Config] = None, *,
                    style_image: Optional[ImageSource] = None, layers: Iterable[str] = PAPER_LAYERS,
                    on_step: Optional[StepCallback] = None, cancel: Optional[CancelToken] = None,
                    **options: Any) -> Figure:
    """Gatys et al.'s figure 1: row 1 rebuilds ``image`` from each of ``layers``' content
    representation, row 2 ``style_image`` (default: ``image``) from the style
    representation of the first 1, 2, ... of ``layers``. ``config`` defaults to
    ``figure_config()`` (average pooling, 256 px, 200 iterations from noise)."""
    config = Config.from_options(config or figure_config(), **options)
    layers = tuple(layers)
    check_layer_names(layers)
    if not layers:
        raise BadOption("layers is empty; give layers such as conv1_1,conv2_1")
    content = to_tensor(load_image(image, "image"))
    style = content if style_image is None else to_tensor(load_image(style_image, "style image"))
    jobs = [("content", (layer,)) for layer in layers] + \
           [("style", layers[:i + 1]) for i in range(len(layers))]
    per_run = sum(config.scale_iteration_counts)
    t0, cells, runs = time.perf_counter(), [], []
    device = "cpu"
    for k, (mode, subset) in enumerate(jobs):
        cfg = reconstruction_config(mode, config, subset)

        def step(event, k=k) -> None:
            if on_step is not None:
                on_step(k * per_run + event.iteration, len(jobs) * per_run)

        result = Stylizer(cfg).run(content, [] if mode == "content" else [style],
                                   callback=step, cancel=cancel)
        device = result.device
        # an ASCII hyphen: the built-in font has no en dash
        label = subset[0] if len(subset) == 1 else f"{subset[0]}-{subset[-1]}"
        cells.append(Cell(result.to_pil(), label))
        runs.append({"mode": mode, "layers": list(subset), "iterations": result.iterations,
                     "losses": result.losses, "seconds": round(result.timings["total"], 3)})
    grid = Grid(title=f"reconstructions from white noise ({config.model.pooling} pooling, "
                      f"{config.output_size} px, {per_run} iterations)")
    grid.add_row([Cell(to_pil(resize_tensor(content, config.output_size)), "input")]
                 + cells[:len(layers)], label="content")
    grid.add_row([Cell(to_pil(resize_tensor(style, config.output_size)), "input")]
                 + cells[len(layers):], label="style")
    record = _base_record("explore.reconstructions", config, torch.device(device))
    record.update(inputs={"image": describe(image),
                          "style_image": None if style_image is None else describe(style_image)},
                  layers=list(layers), runs=runs, layout=grid.layout(),
                  timings={"total": round(time.perf_counter() - t0, 3)})
    return Figure(grid.render(cell=max(64, min(config.output_size, 192))), record)
