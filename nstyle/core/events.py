"""What a run reports and how it is stopped: ``Progress`` events, a ``CancelToken``, the
``Result``, and the run's shared iteration counter (``RunEvents``). Also ``TemporalTarget``,
what a video frame's pixels are kept close to.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional

import torch

from nstyle.core.image_tensors import check_image_tensor
from nstyle.errors import BadOption

if TYPE_CHECKING:
    from nstyle.core.plan import Plan


class CancelToken:
    """Thread-safe flag a front end sets to abort a run; checked once per iteration."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class IterationFigures:
    """``total`` and ``eta`` of an iteration report, from its ``losses``, ``elapsed``,
    ``iteration`` and ``iterations`` (``Progress``, and the copy a Ray task sends back)."""

    losses: dict[str, float]
    elapsed: float
    iteration: int
    iterations: int

    @property
    def total(self) -> float:
        return self.losses["total"]

    @property
    def eta(self) -> float:
        """Seconds left, extrapolated from the mean time per iteration so far."""
        return self.elapsed / self.iteration * (self.iterations - self.iteration)


@dataclass(frozen=True, eq=False, kw_only=True)
class Progress(IterationFigures):
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

    def rendered(self) -> torch.Tensor:
        """The current image as the user would get it, RGB (1, 3, H, W) in [0, 1]."""
        rgb = self.image.clamp(0, 1)
        return self._render(rgb) if self._render is not None else rgb

    def preview(self) -> "Image.Image":  # noqa: F821 - PIL type, imported lazily
        """``rendered`` as an RGB PIL image (for front ends: the engine itself needs no PIL)."""
        from nstyle.io.images import to_pil  # the one way up from core, see docs/architecture.md

        return to_pil(self.rendered())

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
    (a sum over pixels, like tv: coarser scales get it times their positions factor; 0: no
    term). ``new_ground`` (1, 1, H, W) in [0, 1] or None: where the warp brought nothing
    usable (what the frame uncovers), which becomes a style region of its own
    (``regions.plan``'s ``apart``): the Gram of the whole frame barely moves for a strip a
    few pixels wide, so without it a new edge stays the smear it started as."""

    image: torch.Tensor
    mask: torch.Tensor
    weight: float
    new_ground: Optional[torch.Tensor] = None


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
    #: the style image the scale mixing made and the run used (fine_style/coarse_style),
    #: (1, 3, h, w) RGB in [0, 1] on the CPU; None without mixing
    mixed_style: Optional[torch.Tensor] = None

    def to_pil(self) -> "Image.Image":  # noqa: F821
        """``image`` as an RGB PIL image (for front ends: the engine itself needs no PIL)."""
        from nstyle.io.images import to_pil  # the one way up from core, see docs/architecture.md

        return to_pil(self.image)


def check_temporal(temporal: Optional[TemporalTarget]) -> None:
    if temporal is None:
        return
    check_image_tensor(temporal.image, "temporal target")
    m = temporal.mask
    if not isinstance(m, torch.Tensor) or m.ndim != 4 or m.shape[:2] != (1, 1) \
            or m.shape[-2:] != temporal.image.shape[-2:]:
        raise BadOption("temporal mask: expected a tensor of shape (1, 1, H, W) in [0, 1], the "
                        "size of its image")
    if not (isinstance(temporal.weight, (int, float)) and math.isfinite(temporal.weight)
            and temporal.weight >= 0):
        raise BadOption(f"temporal weight must be a finite number >= 0, got {temporal.weight!r}")
    g = temporal.new_ground
    if g is not None and (not isinstance(g, torch.Tensor) or g.shape != m.shape):
        raise BadOption("temporal new_ground: expected a tensor of shape (1, 1, H, W) in [0, 1], "
                        "the size of its image")


@dataclass
class RunEvents:
    """Iteration counting and stop requests shared by every step of one run."""

    callback: Optional[Callable[[Progress], None]]
    cancel: Optional[CancelToken]
    total: int
    t0: float
    done: int = 0
    stopped: bool = False

    def request_stop(self) -> None:
        self.stopped = True
