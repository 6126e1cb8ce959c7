"""The Laplacian-pyramid parameterisation (nstyle.core.pyramid) on tiny tensors."""

import pytest
import torch
import torch.nn.functional as F

from nstyle.core.pyramid import LaplacianPyramid, decompose, reconstruct, usable_levels


@pytest.fixture
def image():
    return torch.rand(1, 3, 37, 52, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_reconstruction_is_exact(image):
    levels = decompose(image, 8)
    assert torch.allclose(reconstruct(levels), image, atol=1e-12)


def test_level_sizes_halve_with_floor(image):
    levels = decompose(image, 3)
    assert [tuple(t.shape[-2:]) for t in levels] == [(37, 52), (18, 26), (9, 13), (4, 6)]


def test_too_small_an_image_gets_fewer_levels():
    assert usable_levels(37, 52, 8) == 5            # 37 -> 18 -> 9 -> 4 -> 2 -> 1
    levels = decompose(torch.rand(1, 3, 37, 52), 8)
    assert len(levels) == 6 and levels[-1].shape[-2:] == (1, 1)


def test_coarse_end_is_the_blurred_smaller_image(image):
    """levels[k:] reconstruct the image halved k times (what scale k of a run sees)."""
    levels = decompose(image, 4)
    half = F.interpolate(image, size=(18, 26), mode="bilinear", align_corners=False)
    assert torch.allclose(reconstruct(levels[1:]), half, atol=1e-12)


def test_gradients_reach_only_the_chosen_levels(image):
    pyramid = LaplacianPyramid.from_image(image, 4)
    params = pyramid.trainable(2)
    assert len(params) == 3 and all(p.requires_grad and p.is_leaf for p in params)
    pyramid.image(0).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert all(not t.requires_grad and t.grad is None for t in pyramid.levels[:2])


def test_an_optimiser_step_changes_only_coarse_levels(image):
    pyramid = LaplacianPyramid.from_image(image, 4)
    fine_before = [t.clone() for t in pyramid.levels[:2]]
    params = pyramid.trainable(2)
    opt = torch.optim.Adam(params, lr=0.1)
    (pyramid.image(2) - 0.5).square().mean().backward()
    opt.step()
    pyramid.freeze()
    assert all(torch.equal(a, b) for a, b in zip(fine_before, pyramid.levels[:2]))
    assert not torch.allclose(pyramid.image(0), image)


def test_zero_finest_blurs_and_replace_round_trips(image):
    pyramid = LaplacianPyramid.from_image(image, 4)
    pyramid.zero_finest(2)
    up = lambda t, size: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
    quarter = reconstruct(decompose(image, 4)[2:])
    assert torch.allclose(pyramid.image(0), up(up(quarter, (18, 26)), (37, 52)), atol=1e-12)
    coarse = torch.rand(1, 3, 18, 26, dtype=torch.float64)
    pyramid.replace(coarse, 1)
    assert torch.allclose(pyramid.image(1), coarse, atol=1e-12)
    assert torch.equal(pyramid.levels[0], torch.zeros_like(pyramid.levels[0]))
    with pytest.raises(ValueError, match="level 1 is"):
        pyramid.replace(image, 1)
    with pytest.raises(ValueError, match="out of range"):
        pyramid.image(9)
