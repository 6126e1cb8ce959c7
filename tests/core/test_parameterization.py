"""``--parameterization``: the pixels, or a Laplacian pyramid of them, as what L-BFGS moves."""

import pytest
import torch

from nstyle.core.parameterization import LEVEL_GAIN, Pixels, Pyramid, make
from nstyle.core.pyramid import decompose
from nstyle.core.stylizer import Stylizer
from nstyle.errors import BadOption
from nstyle.options.config import Config
from tests.support.tensors import to_t

LOW = torch.full((1, 3, 1, 1), -100.0)
HIGH = torch.full((1, 3, 1, 1), 120.0)


def image(h=24, w=20, seed=0):
    return torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 60


def test_pixels_is_the_image_itself_and_clamps():
    start = image()
    p = Pixels()
    x = p.variable(start.clone())
    assert x.is_leaf and x.requires_grad
    assert p.image(x) is x
    p.project(x, LOW, HIGH)
    assert torch.equal(x.detach(), start.clamp(-100, 120))


def test_pyramid_variable_stands_for_the_same_image():
    start = image()
    p = Pyramid(levels=3)
    x = p.variable(start)
    assert x.ndim == 1 and x.is_leaf and x.requires_grad
    assert x.numel() == sum(level.numel() for level in decompose(start, 3))
    torch.testing.assert_close(p.image(x), start, atol=1e-4, rtol=0)


def test_pyramid_levels_are_stored_scaled_by_the_gain():
    start = image()
    p = Pyramid(levels=3)
    x = p.variable(start)
    levels = decompose(start, 3)
    coarsest = levels[-1].reshape(-1)
    torch.testing.assert_close(x[-coarsest.numel():].detach(), coarsest * LEVEL_GAIN ** 3)
    torch.testing.assert_close(x[:levels[0].numel()].detach(), levels[0].reshape(-1))


def test_a_coarse_step_moves_a_region_and_a_fine_step_one_pixel():
    p = Pyramid(levels=3)
    x = p.variable(torch.zeros(1, 3, 16, 16))
    with torch.no_grad():
        fine = x.clone()
        fine[0] = 1.0  # one coefficient of the finest level
        coarse = x.clone()
        coarse[-1] = 1.0  # one coefficient of the low-pass residual (2 x 2 of them per channel)
    assert int((p.image(fine) != 0).sum()) == 1
    assert int((p.image(coarse).abs() > 1e-6).sum()) >= 16


def test_pyramid_gradient_reaches_every_level():
    p = Pyramid(levels=3)
    x = p.variable(image(16, 16))
    (p.image(x) ** 2).sum().backward()
    start = 0
    for shape in p.shapes:
        assert x.grad[start:start + shape.numel()].abs().sum() > 0
        start += shape.numel()


def test_pyramid_projection_changes_the_image_by_exactly_the_clamp():
    start = image(seed=1) * 3  # well outside [-100, 120] in places
    p = Pyramid(levels=3)
    x = p.variable(start)
    before = p.image(x).detach()
    coarse_before = x[p.shapes[0].numel():].detach().clone()
    p.project(x, LOW, HIGH)
    after = p.image(x).detach()
    assert float(after.min()) >= -100 - 1e-3 and float(after.max()) <= 120 + 1e-3
    torch.testing.assert_close(after, before.clamp(-100, 120), atol=1e-3, rtol=0)
    assert torch.equal(x[p.shapes[0].numel():].detach(), coarse_before)  # only the finest level moved


def test_pyramid_needs_its_variable_first():
    with pytest.raises(RuntimeError):
        Pyramid().image(torch.zeros(10))


def test_make_knows_the_names():
    from nstyle.core.parameterization import KINDS
    from nstyle.options.config import PARAMETERIZATIONS

    assert set(KINDS) == set(PARAMETERIZATIONS)  # the option's choices, each with its kind
    assert isinstance(make(None), Pixels) and isinstance(make("pixels"), Pixels)
    assert isinstance(make("pyramid"), Pyramid)
    with pytest.raises(ValueError):
        make("fourier")


def test_the_option_is_checked():
    with pytest.raises(BadOption, match="parameterization must be one of pixels, pyramid"):
        Config.from_options(parameterization="fourier")


def test_a_pyramid_run_lowers_the_loss_and_differs_from_pixels(content_img, style_img):
    opts = dict(size=48, iterations=12, tolerance=0)
    content, style = to_t(content_img), to_t(style_img)
    seen = []
    result = Stylizer(Config.from_options(parameterization="pyramid", **opts)).run(
        content, [style], callback=lambda e: seen.append(e.total))
    pixels = Stylizer(Config.from_options(parameterization="pixels", **opts)).run(content, [style])
    assert result.iterations == len(seen) == 12
    assert seen[-1] < 0.8 * seen[0]
    assert result.image.shape == pixels.image.shape == (1, 3, 32, 48)
    assert float(result.image.min()) >= 0 and float(result.image.max()) <= 1
    assert float((result.image - pixels.image).abs().mean()) > 1e-3


def test_a_tiled_pyramid_run_lowers_the_loss_over_two_scales(content_img, style_img):
    # tiles take the gradient of the image and carry it back through the pyramid
    cfg = Config.from_options(size=96, scales="48,96", scale_iterations="4,3", tolerance=0,
                              tile_size=64, parameterization="pyramid")
    seen = []
    result = Stylizer(cfg).run(to_t(content_img), [to_t(style_img)],
                               callback=lambda e: seen.append((e.scale, e.total)))
    assert [scale for scale, _ in seen] == [1, 1, 1, 1, 2, 2, 2]
    last_scale = [total for scale, total in seen if scale == 2]
    assert last_scale[-1] < last_scale[0]
    assert result.plan.scales[-1].tile == 64
    assert result.image.shape == (1, 3, 64, 96)


def test_the_default_moves_the_pyramid_and_a_videos_later_frames_move_pixels(content_img, style_img, monkeypatch):
    from nstyle.core import parameterization

    made = []
    real = parameterization.make
    monkeypatch.setattr(parameterization, "make", lambda name: made.append(name) or real(name))
    cfg = Config.from_options(size=32, iterations=2, tolerance=0)
    content, style = to_t(content_img), to_t(style_img)
    Stylizer(cfg).run(content, [style])
    assert made == ["pyramid"]
    Stylizer(cfg, refines=True).run(content, [style])
    assert made == ["pyramid", "pixels"]


def test_the_memory_plan_counts_the_pyramids_larger_variable():
    from nstyle.core.plan import make as make_plan

    def peak(name):
        cfg = Config.from_options(size=512, parameterization=name, memory_limit=64)
        return make_plan(cfg, (384, 512), [(384, 512)], None, torch.device("cpu")).scales[-1].estimated_peak_gib

    image_gib = 3 * 384 * 512 * 4 / 2 ** 30
    buffers = (10 + 2 * 30) * image_gib  # 30 last-scale iterations: 30 L-BFGS pairs
    assert peak("pyramid") - peak("pixels") == pytest.approx(buffers / 3, abs=0.011)
