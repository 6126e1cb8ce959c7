"""The paper's scale mixing (Gatys et al. 2017, section 5): a new style image with one
painting's small-scale texture and another's large-scale structure.

Starting from the coarse style, only the Gram matrices of the lower layers (``fine_layers``)
are matched to the fine style's; the deeper layers, never asked to change, keep the coarse
image's arrangement.
"""

from __future__ import annotations

import torch

from nstyle.core import regions
from nstyle.core.events import RunEvents
from nstyle.core.image_tensors import resize_tensor
from nstyle.core.losses import GRAM, LayerTerm
from nstyle.core.objective import Objective, equal_weights
from nstyle.core.optimizer import Step, optimize, step_tiles
from nstyle.core.plan import ScalePlan
from nstyle.core.targets import TargetMaker
from nstyle.core.vgg import deprocess, preprocess
from nstyle.options.config import Config


def mix(network: TargetMaker, config: Config, fine: torch.Tensor, coarse: torch.Tensor, scale: ScalePlan,
        events: RunEvents) -> tuple[torch.Tensor, int]:
    """The paper's scale mixing as the plan's step ``scale`` (see ``Stylizer.mix_scales``);
    returns the image and the iterations run.

    Its objective is built here from what the mixing needs, nothing else of the run's
    loss options: the ``fine_layers`` with equal weights (the few fine layers all carry
    the texture), no content, no tv; every planned iteration runs (no tolerance)."""
    weights = equal_weights(config.scale.fine_layers)
    network.network_for(list(weights))
    with torch.no_grad():
        start = preprocess(resize_tensor(coarse, scale.size).to(network.device))
        h, w = start.shape[-2:]
        fine_bgr = preprocess(resize_tensor(fine, scale.size).to(network.device))
        style_regions = network.with_targets(regions.plan(1, [None], None, None, h, w),
                                           lambda i: network.targets(fine_bgr, weights, scale.tile, GRAM),
                                           list(weights), GRAM)
    objective = Objective(style=tuple(LayerTerm(layer, 1.0 * wl, GRAM) for layer, wl in weights.items()),
                          regions=tuple(style_regions))
    step = Step(scale, objective, start, None, step_tiles(h, w, scale.tile, objective),
                 tolerance=0.0, phase="mix")
    x, _, ran = optimize(network, start.clone(), step, events, config.optim)
    return deprocess(x.detach()).clamp(0, 1).cpu(), ran
