"""How long a run will take, from its plan and this machine's measured speed.

The model (no torch here: it reads the plan and a few measured figures):

    seconds = warmup + sum over the plan's steps of (iterations + setup) * t(pixels)
    t(pixels) = per_iteration + per_megapixel * megapixels

``t`` is one optimizer iteration at a step's size (one forward and backward pass of VGG19
and the losses: close to linear in the pixels); ``setup`` is what a step costs besides its
iterations (its style and content targets, the first iteration's warm-up), in iterations
of that step; ``warmup`` is the rest of a run (colour work, the final image). Every figure
is measured: ``nstyle.io.speed`` times a tiny run once per machine and device, then every
real run adds its own timings, so the estimate follows the machine as it is used.

A tiled step (large outputs) computes each tile with its halo: its pixels are counted
with the overlap. An estimate is for the planned iterations: a run that settles early
(``--tolerance``) ends sooner.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from nstyle.core.plan import Plan, ScalePlan

#: samples kept: the newest win, so the figures follow how busy the machine is now
MAX_SAMPLES = 24
#: each older sample (a step of a run) counts this much less than the one after it, so the
#: estimate follows a machine that has become busier or quieter by the next run
DECAY = 0.5
#: a sample of at least this many iterations sets the level of the whole line (see ``fit``)
LEVEL_ITERATIONS = 20
#: the halo of a tile for the default style layers (relu5_1's receptive field; see vgg.halo_for)
DEFAULT_HALO = 96


@dataclass(frozen=True)
class StepSample:
    """One step of a finished run: its size, iterations and seconds."""

    megapixels: float  # its ``work``: a tiled step's pixels with its halos, times its network share
    iterations: int
    optimize_seconds: float
    setup_seconds: float  # its targets
    measuring: bool = False  # from the tiny measuring run, not a real one

    @property
    def seconds_per_iteration(self) -> float:
        return self.optimize_seconds / max(1, self.iterations)


@dataclass(frozen=True)
class Speed:
    """This machine's speed on one device, fitted from the samples of its last runs."""

    per_iteration: float  # seconds of an iteration however small the image
    per_megapixel: float  # seconds per megapixel of an iteration
    setup: float  # a step's targets and warm-up, in iterations of that step
    warmup: float  # seconds of a run besides its steps
    samples: int = 0

    def iteration_seconds(self, megapixels: float) -> float:
        return self.per_iteration + self.per_megapixel * megapixels


@dataclass
class SpeedRecord:
    """What is kept per machine and device: the samples and the runs' leftover seconds."""

    steps: list[StepSample] = field(default_factory=list)
    warmups: list[float] = field(default_factory=list)

    def add(self, steps: Iterable[StepSample], warmup: float) -> None:
        self.steps = (self.steps + list(steps))[-MAX_SAMPLES:]
        self.warmups = (self.warmups + [max(0.0, warmup)])[-MAX_SAMPLES:]

    def speed(self) -> Speed:
        return fit(self.steps, self.warmups)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [asdict(s) for s in self.steps], "warmups": self.warmups}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SpeedRecord":
        return cls([StepSample(**s) for s in data.get("steps", [])],
                   [float(w) for w in data.get("warmups", [])])


def fit(steps: Sequence[StepSample], warmups: Sequence[float]) -> Speed:
    """A least-squares line through (megapixels, seconds per iteration), weighted by
    iterations and by age (``DECAY``: the newest count most), kept non-negative, then
    scaled to pass through the newest sample of ``LEVEL_ITERATIONS`` or more; the setup
    and warm-up are medians. The measuring run's samples only stand in until real runs of
    two sizes are known."""
    if not steps:
        raise ValueError("no samples to fit")
    real = [s for s in steps if not s.measuring]
    if len({round(s.megapixels, 4) for s in real}) >= 2:
        steps = real  # real runs of two sizes or more: the measuring run's few iterations retire
    xs = [s.megapixels for s in steps]
    ys = [s.seconds_per_iteration for s in steps]
    ws = [max(1, s.iterations) * DECAY ** (len(steps) - 1 - i) for i, s in enumerate(steps)]
    total = sum(ws)
    mx = sum(w * x for w, x in zip(ws, xs)) / total
    my = sum(w * y for w, y in zip(ws, ys)) / total
    var = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs))
    if var <= 1e-12 * max(mx, 1e-9) ** 2:  # one size only: all of it per pixel
        slope, intercept = my / mx if mx > 0 else 0.0, 0.0 if mx > 0 else my
    else:
        slope = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys)) / var
        intercept = my - slope * mx
        if slope < 0:  # noise: a flat line
            slope, intercept = 0.0, my
        elif intercept < 0:  # through the origin instead
            slope = sum(w * x * y for w, x, y in zip(ws, xs, ys)) / sum(w * x * x for w, x in zip(ws, xs))
            intercept = 0.0
    # the newest long enough sample sets the level: the machine as it is now (busier or
    # quieter than when older samples were taken), the line's shape from all of them
    newest = steps[-1]
    predicted = intercept + slope * newest.megapixels
    if newest.iterations >= LEVEL_ITERATIONS and predicted > 0:
        factor = newest.seconds_per_iteration / predicted
        intercept, slope = intercept * factor, slope * factor
    speed = Speed(intercept, slope, 0.0, 0.0, len(steps))
    setups = [s.setup_seconds / speed.iteration_seconds(s.megapixels) for s in steps
              if speed.iteration_seconds(s.megapixels) > 0]
    return Speed(intercept, slope, statistics.median(setups) if setups else 1.0,
                 statistics.median(warmups) if warmups else 0.0, len(steps))


def effective_megapixels(step: ScalePlan, halo: int = DEFAULT_HALO) -> float:
    """The pixels a step's network passes cover, in millions: a tiled step's tiles overlap
    by their halos."""
    if not step.tile:
        return step.width * step.height / 1e6
    across = math.ceil(step.width / step.tile)
    down = math.ceil(step.height / step.tile)
    window_w = min(step.width, step.tile + 2 * halo)
    window_h = min(step.height, step.tile + 2 * halo)
    return across * down * window_w * window_h / 1e6


def work(step: ScalePlan, halo: int = DEFAULT_HALO) -> float:
    """A step's work per iteration in megapixels of the whole default network's pass: its
    effective pixels times its ``network_share`` (a last scale that stops at relu3_1 costs
    about 0.45 as much per pixel). The samples and the estimates both count in it, so a
    cheap last scale and a whole-network first one lie on one line."""
    return effective_megapixels(step, halo) * step.network_share


def seconds(plan: Plan, speed: Speed, halo: int = DEFAULT_HALO) -> float:
    """The estimated seconds of a run that follows ``plan`` on a machine of ``speed``."""
    total = speed.warmup
    for step in plan.steps:
        t = speed.iteration_seconds(work(step, halo))
        total += (step.iterations + speed.setup) * t
    return total


def describe(secs: float) -> str:
    """'about 40 s', 'about 3 min', 'about 1 h 10 min': rounded as a person would say it."""
    if not math.isfinite(secs) or secs < 0:
        return "unknown"
    if secs < 10:
        return "a few seconds"
    if secs < 60:
        return f"about {int(round(secs / 5) * 5)} s"
    minutes = secs / 60
    if minutes < 10:
        halves = round(minutes * 2)  # to the half minute
        return f"about {halves // 2} min" + (" 30 s" if halves % 2 else "")
    if minutes < 60:
        return f"about {int(round(minutes))} min"
    hours, rest = divmod(int(round(minutes / 5) * 5), 60)
    return f"about {hours} h {rest} min" if rest else f"about {hours} h"
