"""Frames in, temporally consistent frames out: style transfer for video.

Stylizing every frame on its own flickers: the optimization lands somewhere else each
time, even where the picture did not change. After Ruder, Dosovitskiy & Brox ("Artistic
style transfer for videos", 2016), every frame after the first

- starts from the previous stylized frame, warped to this one by the optical flow
  between the two content frames (``nstyle.core.flow``): the paper's best start. Where the
  warp is not trusted (what was just uncovered, or moved unpredictably) that start is only
  a smear of stylized colour, repainted by the style and content terms; starting there
  from the content frame instead left a band of barely stylized photo along a pan's new
  edge within a frame's few iterations (bench/video.py, docs/video.md);
- makes what the warp does not cover (grown a few pixels, ``flow.new_ground``) a style
  region of its own (``TemporalTarget.new_ground``): the Gram of the whole frame hardly
  changes for a strip a few pixels wide, so the style term did not repaint it, at 40
  iterations as at 20, and a pan's new edge stayed streaky;
- adds a temporal term to its objective (``objective.TemporalTerm``): weight ·
  Σ c · (x − ω)², which keeps the trusted pixels close to the warped frame ω. c is the
  consistency mask pulled back a few pixels from untrusted ones and blurred
  (``flow.soften_mask``): with a hard mask, each frame's seam along what it uncovered
  was frozen into the next ones, and a pan left a comb of vertical lines;
- runs fewer iterations (``frame_iterations``, at the output size only: it starts close).

The first frame is an ordinary still-image run with the run's options. ``independent``
stylizes every frame as a still instead (the flickering baseline, for comparison).

    for frame in stylize_frames(frames, [style], config, video=VideoOptions()):
        frame.image.save(f"out/{frame.index:05d}.png")

Frames may be paths, PIL images or NumPy arrays of one size; each is stylized at the
config's output size. The engine never sees a path here either: decoding a file is
``nstyle.io.video_files``'s (and the front ends') business.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from nstyle.core import color, flow, losses
from nstyle.options.config import Config, check_weight, option
from nstyle.core.events import CancelToken, Progress, Result, TemporalTarget
from nstyle.core.stylizer import Stylizer
from nstyle.core.targets import StyleTargets
from nstyle.core.image_tensors import resize_tensor
from nstyle.errors import BadImage, BadOption
from nstyle.io.images import ImageSource, load_image, to_tensor
from nstyle.io.inputs import as_style_list
from nstyle.core.plan import Plan

#: the temporal term's weight: it must hold the unchanged pixels against the style term,
#: which would repaint them anew. On a 256 px pan (bench/video.py, docs/video.md) 1e3,
#: 1e4 and 1e5 took the consistency figure from 4.5 (none) to 3.5, 2.3 and 1.1 levels;
#: at 1e5 the frames were frozen copies (below the content's own figure) with speckle
#: along the new edge
DEFAULT_TEMPORAL_WEIGHT = 1e4
#: how far (px per 64 px of the output's longest side) the temporal term's mask is pulled
#: back from untrusted pixels (``flow.soften_mask``)
MASK_MARGIN_PER_64 = 1
#: how far (px per 64 px of the output's longest side) what a frame uncovers is grown into
#: the style region of its own (``flow.new_ground``; 8 px at 256 px, as judged)
NEW_GROUND_GROW_PER_64 = 2
#: iterations of every frame after the first (it starts from the warped previous frame).
#: 20 with the new ground as its own style region was preferred by two blind judges over
#: 40 without it (docs/video.md): the frame's whole-image Gram barely moves for a strip
#: a few pixels wide, so more iterations had not repainted the new edge either
DEFAULT_FRAME_ITERATIONS = 20
#: the style layer every frame after the first leaves out (``coarse_only_layers`` there):
#: it lays out a painting's large shapes, which the warped previous frame brings, and its
#: convolutions (conv4_3, conv4_4, conv5_1) are about a sixth of a later frame's time.
#: Judged blind against keeping it: a tie (preferred on a pan, not on a zoom, every call
#: at confidence 1), at 0.84x the time per later frame (docs/video.md)
LATER_FRAMES_LEAVE_OUT = "relu5_1"


@dataclass(frozen=True)
class VideoOptions:
    """The knobs of a clip, besides the engine's (``nstyle.options.config``)."""

    temporal_weight: float = option(
        DEFAULT_TEMPORAL_WEIGHT, "weight of the temporal loss, which keeps each frame's pixels "
        "close to the previous stylized frame warped to it, where the optical flow is trusted "
        "(0: off; the warped start stays)", label="Temporal weight")
    flow: str = option("dis", "optical flow method (OpenCV): dis (Dense Inverse Search, fast) "
                       "or farneback", choices=flow.FLOW_METHODS, label="Optical flow")
    frame_iterations: int = option(
        DEFAULT_FRAME_ITERATIONS, "iterations of each frame after the first, which starts from "
        "the previous one warped (the first frame runs --iterations)", label="Iterations per later frame")
    independent: bool = option(
        False, "stylize every frame on its own as a still image (no warped start, no temporal "
        "loss): the flickering baseline, for comparison", label="Each frame on its own")
    whole_frame_style: bool = option(
        False, "match the style over each later frame as a whole only, as before 2026-12-07: "
        "what a frame uncovers then gets no style region of its own and stays streaky",
        label="Style over whole frames only")
    deep_layer_in_later_frames: bool = option(
        False, f"keep the deepest style layer ({LATER_FRAMES_LEAVE_OUT}) in every frame after the "
        "first: by default they leave it out, since they start from the previous frame, whose "
        "large shapes that layer laid out (without it: 0.84x the time per frame, judged a tie)",
        label="Deepest style layer in later frames")

    def __post_init__(self) -> None:
        check_weight("temporal_weight", self.temporal_weight)
        if self.flow not in flow.FLOW_METHODS:
            raise BadOption(f"flow must be one of {', '.join(flow.FLOW_METHODS)}, got {self.flow!r}")
        if not isinstance(self.frame_iterations, int) or isinstance(self.frame_iterations, bool) \
                or self.frame_iterations < 1:
            raise BadOption(f"frame_iterations must be an integer >= 1, got {self.frame_iterations!r}")
        for name in ("independent", "whole_frame_style", "deep_layer_in_later_frames"):
            if not isinstance(getattr(self, name), bool):
                raise BadOption(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_options(cls, **options: Any) -> "VideoOptions":
        """From flat names and user values (strings from argv or a form are converted)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for name, value in options.items():
            if name not in known:
                raise BadOption(f"unknown video option {name!r} (known: {', '.join(known)})")
            values[name] = _coerce(known[name], value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


VIDEO_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(VideoOptions))
#: engine options a clip has no use for: the scale mixing's (a clip takes style images
#: only; intermediate saves are the ``output`` section, which no video front end offers)
NOT_FOR_VIDEO = ("fine_layers", "mix_iterations")


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """A user value (a string from argv or a form, or a Python value) as the field's type."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    text = value.strip() if isinstance(value, str) else value
    if kind == "bool":
        if isinstance(text, bool):
            return text
        if str(text).lower() in ("1", "true", "yes", "on"):
            return True
        if str(text).lower() in ("0", "false", "no", "off"):
            return False
        raise BadOption(f"{f.name}: expected true or false, got {value!r}")
    try:
        if kind == "int" and not isinstance(text, bool) and float(text) == int(float(text)):
            return int(float(text))
        if kind == "float" and not isinstance(text, bool):
            return float(text)
        if kind == "str" and isinstance(text, str):
            return text
    except (TypeError, ValueError, OverflowError):
        pass
    raise BadOption(f"{f.name}: expected {kind}, got {value!r}")


@dataclass(frozen=True)
class FrameProgress:
    """One iteration of one frame: ``event`` is the engine's ``Progress`` of that frame."""

    frame: int  # 0-based index of the frame being stylized
    frames: Optional[int]  # how many the clip has, when known
    event: Progress


@dataclass
class StylizedFrame:
    """One output frame and how it was made."""

    index: int
    image: Image.Image  # RGB, the output size
    result: Result  # the engine's: losses, iterations, timings, plan
    seconds: float
    #: share of the frame where the warp from the previous frame is trusted (None: first)
    trusted: Optional[float] = None
    #: mean |this − previous output warped|, on trusted pixels, in 0..255 levels
    temporal_error: Optional[float] = None

    def summary(self) -> dict[str, Any]:
        """The frame's line in a run record."""
        r = self.result
        return {"frame": self.index, "iterations": r.iterations, "seconds": round(self.seconds, 3),
                "trusted": _round(self.trusted), "temporal_error": _round(self.temporal_error),
                "losses": {k: float(f"{v:.4g}") for k, v in r.losses.items()}}


def _round(x: Optional[float], digits: int = 4) -> Optional[float]:
    return None if x is None or x != x else round(x, digits)


def later_frames_config(config: Config, options: VideoOptions) -> Config:
    """The config of every frame after the first: one scale, the output size, starting
    close (the warped previous frame), so ``frame_iterations`` iterations, all of them,
    without ``LATER_FRAMES_LEAVE_OUT`` unless ``deep_layer_in_later_frames``."""
    # every planned iteration: the image is mostly settled from the start, so the mean
    # change the tolerance looks at would end a frame while what it uncovered is still raw
    return Config.from_options(config, scales=(config.output_size,),
                               scale_iterations=(options.frame_iterations,), tolerance=0.0,
                               coarse_only_layers=later_frames_coarse_only(config, options))


def later_frames_coarse_only(config: Config, options: VideoOptions) -> tuple[str, ...]:
    """The run's coarse-only layers, plus ``LATER_FRAMES_LEAVE_OUT`` where it is one of
    several style layers of a loss that can leave a layer out."""
    loss = config.loss
    layers = loss.explicit_coarse_only_layers  # auto's deep layers are for a still's last scale
    deep = LATER_FRAMES_LEAVE_OUT
    if options.deep_layer_in_later_frames or deep in layers or deep not in loss.style_layers:
        return layers
    if not losses.get(loss.style_loss).separable_layers or set(loss.style_layers) <= {*layers, deep}:
        return layers
    return (*layers, deep)


class VideoStylizer:
    """Stylizes the frames of one clip with one config, styles and ``VideoOptions``.

    Two ``Stylizer``s share their style targets: the first frame's (the run's own schedule)
    and the later frames' (``later_frames_config``)."""

    def __init__(self, config: Config, styles: Sequence[torch.Tensor],
                 options: Optional[VideoOptions] = None, device: Optional[torch.device] = None) -> None:
        flow.import_cv2()  # (the video extra) missing: said now, not after the first frame
        self.config = config
        self.options = options or VideoOptions()
        self.styles = [s.float() for s in styles]
        targets = StyleTargets()
        self.first = Stylizer(config, device=device, style_targets=targets)
        self.later = self.first if self.options.independent else \
            Stylizer(later_frames_config(config, self.options), device=self.first.device,
                     style_targets=targets, refines=True)

    def content(self, frame: ImageSource, index: int) -> torch.Tensor:
        """A frame as the engine takes it, already at the output size (so the flow, the warp
        and the engine all see the same pixels)."""
        image = load_image(frame, f"frame {index + 1}")
        return resize_tensor(to_tensor(image), self.config.output_size)

    def plan(self, content: torch.Tensor) -> Plan:
        """The first frame's plan (raises ``TooLarge`` before any work when it cannot fit)."""
        return self.first.plan(content, self.styles)

    def frames(self, frames: Iterable[ImageSource], *, start: int = 0,
               previous: Optional[ImageSource] = None, total: Optional[int] = None,
               callback: Optional[Callable[[FrameProgress], None]] = None,
               cancel: Optional[CancelToken] = None) -> Iterator[StylizedFrame]:
        """Stylized frames, in order, as each is done. ``start``/``previous``: continue a
        clip whose frames before ``start`` are done (``previous`` the output of frame
        start − 1): those frames are read, not stylized, and not yielded."""
        prev_content: Optional[torch.Tensor] = None
        prev_output = None if previous is None else to_tensor(load_image(previous, "previous output"))
        if start > 0 and prev_output is None:
            raise BadOption("start > 0 needs the previous output frame (previous=)")
        for index, frame in enumerate(frames):
            if index < start - 1:
                continue
            content = self.content(frame, index)
            if prev_content is not None and content.shape != prev_content.shape:
                raise BadImage(f"frame {index + 1} is {content.shape[-1]}x{content.shape[-2]} at the "
                               f"output size, frame {index} {prev_content.shape[-1]}x"
                               f"{prev_content.shape[-2]}; all frames must have one size")
            if index >= start:
                done = self._frame(index, content, prev_content, prev_output, total, callback, cancel)
                prev_output = to_tensor(done.image)  # as written: a resumed run sees the same
                yield done
            prev_content = content

    def _frame(self, index: int, content: torch.Tensor, prev_content: Optional[torch.Tensor],
               prev_output: Optional[torch.Tensor], total: Optional[int],
               callback: Optional[Callable[[FrameProgress], None]],
               cancel: Optional[CancelToken]) -> StylizedFrame:
        t0 = time.perf_counter()
        on_event = None if callback is None else (lambda e: callback(FrameProgress(index, total, e)))
        fl = None
        if prev_content is not None:
            if prev_output is None or prev_output.shape != content.shape:
                raise BadOption("the previous output frame must have the output size")
            fl = flow.frame_flow(_uint8(prev_content), _uint8(content), self.options.flow)
        if fl is None or self.options.independent:
            result = self.first.run(content, self.styles, callback=on_event, cancel=cancel)
        else:
            start, target = self._warped(content, prev_output, fl)
            result = self.later.run(content, self.styles, init_image=start, temporal=target,
                                    callback=on_event, cancel=cancel)
        image = result.to_pil()
        error = None if fl is None else flow.temporal_error(_uint8(prev_output), np.asarray(image), fl)
        return StylizedFrame(index, image, result, time.perf_counter() - t0,
                             None if fl is None else fl.trusted, error)

    def _warped(self, content: torch.Tensor, prev_output: torch.Tensor, fl: flow.FrameFlow
                ) -> tuple[torch.Tensor, TemporalTarget]:
        """The frame's starting image and temporal target (weight 0: no term, but its new
        ground), from the previous output warped."""
        warped = flow.warp(prev_output[0].permute(1, 2, 0).numpy(), fl.backward)
        warped_t = torch.from_numpy(warped).permute(2, 0, 1)[None].clamp(0, 1).contiguous()
        px_per_64 = max(content.shape[-2:]) / 64  # the masks' margins scale with the frame
        mask = torch.from_numpy(flow.soften_mask(fl.mask, round(MASK_MARGIN_PER_64 * px_per_64)))[None, None]
        start = warped_t
        if self.config.color.preserve_colors == "luminance":  # what its optimization sees
            start = warped_t = color.gray(warped_t)
        ground = None
        if not self.options.whole_frame_style:
            grow = round(NEW_GROUND_GROW_PER_64 * px_per_64)
            ground = torch.from_numpy(flow.new_ground(fl.mask, grow))[None, None]
        return start, TemporalTarget(warped_t, mask, self.options.temporal_weight, ground)


def _uint8(image: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (H, W, 3) uint8, as frames are written."""
    return (image[0].clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def stylize_frames(frames: Iterable[ImageSource], styles: Any, config: Optional[Config] = None, *,
                   callback: Optional[Callable[[FrameProgress], None]] = None,
                   cancel: Optional[CancelToken] = None, **options: Any) -> Iterator[StylizedFrame]:
    """Stylize a clip's frames (paths, PIL images or arrays of one size), yielding each
    ``StylizedFrame`` as it is done. ``styles``: one image or a list; ``options``: engine
    options (``size=256``, ``style_weight=1e5``, ...) and video options
    (``temporal_weight``, ``flow``, ``frame_iterations``, ``independent``,
    ``whole_frame_style``, ``deep_layer_in_later_frames``)."""
    video = {k: options.pop(k) for k in list(options) if k in VIDEO_OPTION_NAMES}
    config = Config.from_options(config, **options)
    style_tensors = [to_tensor(load_image(s, f"style image {i + 1}"))
                     for i, s in enumerate(as_style_list(styles))]
    if not style_tensors and config.loss.style_weight > 0:
        raise BadOption("style_weight > 0 but no style image was given")
    stylizer = VideoStylizer(config, style_tensors, VideoOptions.from_options(**video))
    return stylizer.frames(frames, callback=callback, cancel=cancel)  # checked before any frame

