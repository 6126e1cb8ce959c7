"""A run's last scale does not depend on how many iterations it was planned to have: the
image after k of them is the output of the run planned with k (bench/schedule_curve.py
builds the quality-against-time curve on this)."""

import torch

from nstyle.core.stylizer import Stylizer
from nstyle.options.config import Config
from tests.support.tensors import to_t


def run(content_img, style_img, last: int, snapshots: list):
    config = Config.from_options(size=48, scales=(32, 48), scale_iterations=(3, last),
                                 precision="fp32", device="cpu", tolerance=0.0)

    def keep(p):
        if p.scale == p.scales:
            snapshots.append(p.rendered().cpu())
    return Stylizer(config).run(to_t(content_img), [to_t(style_img)], callback=keep)


def test_the_last_scale_after_k_iterations_is_the_output_of_a_run_planned_with_k(content_img, style_img):
    long_run: list = []
    run(content_img, style_img, 5, long_run)
    short = run(content_img, style_img, 2, []).image.cpu().reshape(long_run[1].shape)
    assert torch.equal(long_run[1], short)  # after 2 of 5 planned = planned 2
    assert not torch.equal(long_run[0], short) and not torch.equal(long_run[4], short)
