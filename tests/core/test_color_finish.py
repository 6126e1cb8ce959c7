"""The OkLab colour finish (nstyle.core.color_finish), and --color-finish on the Gram default."""

import pytest
import torch

from nstyle.core.color import zca_match
from nstyle.core.color_finish import bilateral_ab, oklab_finish, oklab_to_rgb, rgb_to_oklab
from nstyle.core.stylizer import Stylizer
from nstyle.options.config import Config


def _rand(h=12, w=16, seed=0):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_oklab_round_trip_and_known_values():
    rgb = _rand()
    assert torch.allclose(oklab_to_rgb(rgb_to_oklab(rgb)), rgb, atol=1e-6)
    white = rgb_to_oklab(torch.ones(1, 3, 1, 1, dtype=torch.float64)).flatten()
    assert torch.allclose(white, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-4)
    # Ottosson's reference: sRGB red is L 0.628, a 0.225, b 0.126
    red = rgb_to_oklab(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)).flatten()
    assert torch.allclose(red, torch.tensor([0.628, 0.225, 0.126], dtype=torch.float64), atol=2e-3)


def test_zca_match_gives_the_references_mean_and_covariance():
    gen = torch.Generator().manual_seed(3)
    values = torch.randn(4000, 2, generator=gen, dtype=torch.float64) @ torch.tensor([[1.0, 0.3], [0.0, 0.5]],
                                                                                     dtype=torch.float64)
    reference = torch.randn(3000, 2, generator=gen, dtype=torch.float64) * torch.tensor([0.2, 0.05],
                                                                                       dtype=torch.float64) + 0.1
    out = zca_match(values, reference, ridge=0.0)
    assert torch.allclose(out.mean(0), reference.mean(0), atol=1e-9)
    assert torch.allclose(torch.cov(out.T, correction=0), torch.cov(reference.T, correction=0), atol=1e-9)


def test_bilateral_smooths_flat_lightness_and_stops_at_its_edges():
    ab = torch.zeros(1, 2, 10, 10, dtype=torch.float64)
    ab[..., 5:] = 1.0  # a colour edge down the middle
    flat = torch.full((1, 1, 10, 10), 0.5, dtype=torch.float64)
    blurred = bilateral_ab(ab, flat)
    assert 0.05 < blurred[0, 0, 5, 4] < 0.95  # mixed across
    edge = flat.clone()
    edge[..., 5:] = 1.0  # a lightness edge in the same place
    kept = bilateral_ab(ab, edge)
    assert kept[0, 0, 5, 4] < blurred[0, 0, 5, 4] / 3 and kept[0, 0, 5, 5] > 1 - (1 - blurred[0, 0, 5, 5]) / 3


def test_finish_keeps_lightness_in_the_paintings_range_and_takes_its_palette():
    output, content = _rand(seed=1), _rand(seed=2)
    painting = _rand(20, 20, seed=3) * 0.4 + torch.tensor([0.5, 0.3, 0.1], dtype=torch.float64).view(1, 3, 1, 1)
    done = oklab_finish(output, content, [painting])
    lab, paint_lab = rgb_to_oklab(done), rgb_to_oklab(painting)
    assert lab[:, 0].min() >= paint_lab[:, 0].min() - 2e-3 and lab[:, 0].max() <= paint_lab[:, 0].max() + 2e-3
    # a/b near the painting's mean (the filter and the clamp move them a little)
    assert torch.allclose(lab[:, 1:].mean((0, 2, 3)), paint_lab[:, 1:].mean((0, 2, 3)), atol=0.02)
    with pytest.raises(ValueError, match="one size"):
        oklab_finish(output, _rand(6, 6), [painting])


def test_a_grey_painting_gives_a_grey_picture():
    grey = _rand(16, 16, seed=4)[:, :1].expand(-1, 3, -1, -1)
    done = rgb_to_oklab(oklab_finish(_rand(seed=5), _rand(seed=6), [grey]))
    assert done[:, 1:].abs().max() < 0.01


def test_the_gram_default_can_end_with_it(content_img, style_img):
    from tests.support.tensors import to_t

    content, style = to_t(content_img), to_t(style_img)
    options = dict(size=32, iterations=2, device="cpu", seed=0)
    plain = Stylizer(Config.from_options(**options)).run(content, [style])
    finished = Stylizer(Config.from_options(color_finish="oklab", **options)).run(content, [style])
    from nstyle.core.image_tensors import resize_tensor

    expected = oklab_finish(plain.image, resize_tensor(content, 32), [resize_tensor(style, 32)])
    assert torch.allclose(finished.image, expected, atol=1e-6)
    assert not torch.allclose(finished.image, plain.image, atol=1e-2)
    assert Config().color_finish == "none" and Config.from_options(method="nnst").color_finish == "oklab"
