"""One optimization of the plan (a scale, or the scale mixing): the optimizer over the
image, its closure, the loop with events, stop and cancel, the divergence check, the early
stop once the image has settled, and the restarts from the best image for the objectives
that climb (``restarts_on_rise``); the scale mixing's own optimizer (``MIX_LR``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from nstyle.core import regions, tiling
from nstyle.core.events import Progress, RunEvents
from nstyle.core.objective import Objective, with_total
from nstyle.core.parameterization import Parameterization, Pixels
from nstyle.core.plan import ScalePlan
from nstyle.core.targets import TargetMaker
from nstyle.core.tiles import Tile, make_tiles
from nstyle.core.vgg import deprocess, halo_for, preprocess
from nstyle.errors import Cancelled, RunFailed
from nstyle.options.config import OptimOptions

#: steps averaged when deciding that the image has stopped changing (``tolerance``):
#: single L-BFGS steps vary too much in length to judge by one
SETTLE_WINDOW = 5


@dataclass
class Step:
    """One optimization of the plan (a scale, or the scale mixing), ready to run."""

    plan: ScalePlan
    objective: Objective
    content_bgr: torch.Tensor  # the photo at this size: pinned under ``keep``
    keep: Optional[torch.Tensor]  # (1, 1, H, W) keep mask at this size
    tiles: list[Tile]  # empty: the whole image at once
    tolerance: float  # see ``Stylizer._settled``
    phase: str = "stylize"
    index: int = 1  # which scale, of ``count``
    count: int = 1
    render: Optional[Callable[[torch.Tensor], torch.Tensor]] = None  # for previews
    #: what the optimizer moves (``--parameterization``): the pixels, or a pyramid of them
    parameterization: Parameterization = field(default_factory=Pixels)

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """The whole image at the variable ``x``: its free pixels, the photo under ``keep``."""
        return regions.compose(self.parameterization.image(x), self.content_bgr, self.keep)


#: how far (relative) the loss may rise above its best before L-BFGS restarts from there
#: (``restarts_on_rise``: later video frames, and style losses that ask for it)
RISE_TO_RESTART = 1e-3


def restarts_on_rise(step: Step, optimizer: torch.optim.Optimizer) -> bool:
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


#: the scale mixing runs Adam with this step (0..255 levels), whatever ``optimizer`` the
#: run uses. Its objective (the fine layers' Grams alone, from the coarse painting) made
#: projected L-BFGS climb for its first 15-25 iterations (Starry Night on The Scream:
#: 5.3e7 to peaks of 2.2e9 at 96 px, 4.9e9 at 256 px); 20 iterations ended mid-climb on
#: rainbow noise, and once settled it had painted over the coarse painting's shapes (a
#: plain Starry Night texture at 100 iterations). Restarting from the best (``BestIterate``)
#: stalled it (no progress at all at 256 px: every first step after a restart climbs). Adam
#: descends from the first step (5.3e7 to 2.1e6 in 20 iterations at 96 px, 3.9e7 to 5.6e4
#: in 100 at 256 px) and keeps the coarse painting's shapes under the fine one's strokes.
MIX_LR = 10.0


def best_iterate_for(step: Step, optimizer: torch.optim.Optimizer) -> Optional["BestIterate"]:
    """What keeps a step's best image: restarts where ``restarts_on_rise``; the scale
    mixing keeps its best image without restarts, to end on it."""
    if restarts_on_rise(step, optimizer):
        return BestIterate()
    if step.phase == "mix":
        return BestIterate(restart=False)
    return None


class BestIterate:
    """The lowest-loss image seen by one optimization, and (``restart``, L-BFGS only) a
    restart from it.

    Called in the closure, before L-BFGS reads its history: when the loss has risen above
    the best, the image and its gradient go back to the best's and the history is
    dropped, so the step is taken afresh from there (a gradient step, then the curvature
    is learnt again). Costs no extra evaluation: the best's gradient is kept. Either way
    ``optimize`` ends the step on the best image when its last step climbed."""

    def __init__(self, restart: bool = True) -> None:
        self.loss = math.inf  # as the optimizer sees it (scaled, see ``make_closure``)
        self.restart = restart
        self.restarts = 0

    @property
    def total(self) -> float:
        """The best image's total loss, unscaled."""
        return float(self.terms["total"]) if self.loss < math.inf else math.inf

    def check(self, x: torch.Tensor, loss: torch.Tensor, terms: dict[str, torch.Tensor],
              optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        value = float(loss)
        if self.restart and value > self.loss * (1 + RISE_TO_RESTART):
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
            self.x = x.detach().clone()
            self.grad = x.grad.detach().clone() if self.restart else None
        return loss, terms


def step_tiles(height: int, width: int, tile: int, objective: Objective) -> list[Tile]:
    if not tile or not objective.layers:
        return []
    return make_tiles(height, width, tile, halo_for(objective.layers))


def make_optimizer(x: torch.Tensor, o: OptimOptions, phase: str = "stylize") -> torch.optim.Optimizer:
    """The ``--optimizer`` over the one variable ``x``, one iteration per ``step()``; for
    the scale mixing (``phase`` mix), Adam (see ``MIX_LR``)."""
    lr = o.learning_rate
    if phase == "mix":
        return torch.optim.Adam([x], lr=MIX_LR)
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


def evaluate(network: TargetMaker, x: torch.Tensor, step: Step, backward: bool, loop: bool = True
             ) -> dict[str, torch.Tensor]:
    """The objective's terms at ``x`` (the free pixels); with ``backward``, x.grad too;
    ``loop``: in the loop's precision, else in float32 (tiles always are)."""
    image = step.image(x)
    objective = step.objective
    if not step.tiles:
        terms = objective.evaluate(network.features(image, objective.layers, loop=loop), image)
        if backward:
            terms["total"].backward()
        return terms
    # tiles run the float32 network: large outputs trade speed for exactness here
    terms, grad = tiling.loss_and_grad(network.vgg, image, step.tiles, objective, need_grad=backward)
    pixel = objective.pixel_terms(image)
    terms.update(pixel)
    if backward:
        # the gradient of ⟨image, grad⟩ is grad: carried through compose to x
        surrogate = (image * grad).sum()
        for value in pixel.values():
            surrogate = surrogate + value
        surrogate.backward()
    return with_total({k: v.detach() for k, v in terms.items()})


def make_closure(network: TargetMaker, x: torch.Tensor, step: Step, optimizer: torch.optim.Optimizer,
                 last: dict[str, torch.Tensor], best: Optional["BestIterate"] = None
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
        terms = evaluate(network, x, step, backward=True)
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


def optimize(network: TargetMaker, start: torch.Tensor, step: Step, events: RunEvents, options: OptimOptions
             ) -> tuple[torch.Tensor, dict[str, float], int]:
    """Optimizes one step from the free pixels ``start``; returns the image, its losses
    and the iterations run (fewer than planned when stopped or settled)."""
    param = step.parameterization
    x = param.variable(start)
    optimizer = make_optimizer(x, options, step.phase)
    last: dict[str, torch.Tensor] = {}
    best = best_iterate_for(step, optimizer)
    closure = make_closure(network, x, step, optimizer, last, best)
    # the valid pixel range, per channel, in VGG's input space
    lowest = preprocess(torch.zeros(1, 3, 1, 1, device=x.device, dtype=x.dtype))
    highest = preprocess(torch.ones(1, 3, 1, 1, device=x.device, dtype=x.dtype))
    changes: list[float] = []  # mean |pixel change| per step, in 0..255 levels
    it = 0
    for it in range(1, step.plan.iterations + 1):
        if events.cancel is not None and events.cancel.cancelled:
            raise Cancelled(f"cancelled after {events.done} of {events.total} iterations")
        before = x.detach().clone()  # the last good variable, should this step diverge
        optimizer.step(closure)
        param.project(x, lowest, highest)  # see nstyle.core.stylizer's docstring
        # one device->host transfer for all terms, not one per term (matters on a GPU)
        values = dict(zip(last, torch.stack(list(last.values())).double().tolist()))
        check_finite(values, x, before, step, events)
        events.done += 1
        with torch.no_grad():
            changes.append(float((param.image(x) - param.image(before)).abs().mean()))
        if events.callback is not None:
            events.callback(progress(x, step, events, values))
        if events.stopped or settled(changes, step.tolerance):
            break
    final = None if best is None else end_on_best(network, x, step, best)
    if final is None:
        final = final_losses(network, x, step)
    with torch.no_grad():
        image = step.image(x.detach())
    return image, final, it


def check_finite(values: dict[str, float], x: torch.Tensor, before: torch.Tensor,
                  step: Step, events: RunEvents) -> None:
    """Raises ``RunFailed`` (with the last good image) when the step diverged."""
    if math.isfinite(values["total"]) and torch.isfinite(x).all():
        return
    error = RunFailed(f"the loss became {values['total']} at iteration {events.done + 1}; "
                      "lower the learning rate or the loss weights")
    with torch.no_grad():
        good = step.image(before)
    error.last_good = (events.done, deprocess(good).clamp(0, 1).cpu())
    raise error


@torch.no_grad()
def progress(x: torch.Tensor, step: Step, events: RunEvents, values: dict[str, float]) -> Progress:
    # deprocess makes the event's own copy: the optimizer changes x in place
    image = deprocess(step.image(x.detach()))
    return Progress(iteration=events.done, iterations=events.total, losses=values,
                    elapsed=time.perf_counter() - events.t0, image=image, scale=step.index,
                    scales=step.count, size=step.plan.size, phase=step.phase,
                    _stop=events.request_stop, _render=step.render)


def end_on_best(network: TargetMaker, x: torch.Tensor, step: Step, best: "BestIterate"
                ) -> Optional[dict[str, float]]:
    """Puts the best image back in ``x`` when the last step climbed above it. Returns the
    image's losses when the check's pass was already ``final_losses``' own (a float32
    loop, or tiles, which always run float32: a later video frame's last forward pass
    is then not made twice), else None."""
    with torch.no_grad():  # in the loop's precision, as the best's loss was
        terms = evaluate(network, x, step, backward=False)
        if float(terms["total"]) > best.total:
            x.copy_(best.x)  # the last step climbed
            return None
    if network.dtype == torch.float32 or step.tiles:
        return {k: float(v) for k, v in terms.items()}
    return None


def final_losses(network: TargetMaker, x: torch.Tensor, step: Step) -> dict[str, float]:
    """The final image's own losses, in float32: what the run record reports. Those the
    loop saw last are of the iterate before the last step, in the loop's precision: a
    tiled and an untiled run of one image once recorded totals 18% apart (2.85e11 against
    2.41e11 at 160 px after 10 iterations). Costs one pass without gradients (tiled: two),
    once per step."""
    with torch.no_grad():
        return {k: float(v) for k, v in evaluate(network, x, step, backward=False, loop=False).items()}


def settled(changes: list[float], tolerance: float) -> bool:
    """True once the image has stopped changing: the mean |pixel change| of the last
    ``SETTLE_WINDOW`` steps is under ``tolerance`` levels (0 = never stop early)."""
    if tolerance <= 0 or len(changes) < SETTLE_WINDOW:
        return False
    return sum(changes[-SETTLE_WINDOW:]) / SETTLE_WINDOW < tolerance
