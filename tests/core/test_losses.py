import numpy as np
import pytest
import torch

from nstyle.core.losses.gram import gram, style_loss
from nstyle.core.losses.terms import content_loss, total_variation


def test_gram_matches_numpy_reference():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((2, 5, 4, 3)).astype(np.float32)
    expected = np.stack([fi.reshape(5, -1) @ fi.reshape(5, -1).T for fi in f]) / 12
    got = gram(torch.from_numpy(f)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got.shape == (2, 5, 5)


def test_gram_is_float32_even_for_bf16_features():
    f = torch.randn(1, 4, 3, 3, dtype=torch.bfloat16)
    assert gram(f).dtype == torch.float32


def test_content_loss_is_half_sum_of_squares():
    torch.manual_seed(0)
    f, p = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    expected = 0.5 * float(((f - p) ** 2).sum())
    assert float(content_loss(f, p)) == pytest.approx(expected, rel=1e-6)
    assert float(content_loss(p, p)) == 0.0


def test_style_loss_matches_the_papers_formula():
    """E_l = 1/(4 N² M²) Σ (G − A)² with unnormalized Grams G = F Fᵀ."""
    rng = np.random.default_rng(1)
    n, h, w = 6, 5, 4
    m = h * w
    f = rng.standard_normal((n, h, w))
    s = rng.standard_normal((n, h, w))
    g = f.reshape(n, m) @ f.reshape(n, m).T
    a = s.reshape(n, m) @ s.reshape(n, m).T
    expected = ((g - a) ** 2).sum() / (4 * n**2 * m**2)
    target = gram(torch.tensor(s[None], dtype=torch.float32))
    got = float(style_loss(torch.tensor(f[None], dtype=torch.float32), target))
    assert got == pytest.approx(expected, rel=1e-5)


def test_style_loss_is_zero_at_its_target_and_positive_elsewhere():
    f = torch.randn(1, 8, 6, 6)
    assert float(style_loss(f, gram(f))) == pytest.approx(0.0, abs=1e-9)
    assert float(style_loss(f, gram(f * 2))) > 0


def test_style_target_of_a_different_size_compares_by_statistics():
    """A texture tiled to twice the size has the same normalized Gram."""
    f = torch.rand(1, 4, 5, 5)
    tiled = f.repeat(1, 1, 2, 2)
    assert float(style_loss(tiled, gram(f))) == pytest.approx(0.0, abs=1e-8)


def test_total_variation():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 2.0
    # four neighbours differ by 2 -> 4 * 4
    assert float(total_variation(x)) == pytest.approx(16.0)
    assert float(total_variation(torch.ones(1, 3, 4, 4))) == 0.0


def test_losses_are_differentiable():
    f = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    p = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    target = gram(p)
    assert torch.autograd.gradcheck(lambda x: content_loss(x, p).double(), (f,))
    assert torch.autograd.gradcheck(lambda x: total_variation(x).double(), (f,))
    assert torch.autograd.gradcheck(lambda x: style_loss(x, target), (f,))


def _autograd_style_loss(f, target):
    """The style loss written with plain autograd ops, as the reference for the custom backward."""
    b, n, h, w = f.shape
    flat = f.reshape(b, n, h * w)
    g = torch.bmm(flat, flat.transpose(1, 2)) / (h * w)
    return (g - target).pow(2).sum() / (4.0 * n * n)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_style_loss_gradient_passes_gradcheck(layout):
    torch.manual_seed(0)
    f = torch.randn(2, 4, 3, 5, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    target = gram(torch.randn(2, 4, 6, 2, dtype=torch.float64)).detach()
    assert torch.autograd.gradcheck(lambda x: style_loss(x, target), (f,))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_style_loss_gradient_matches_autograd_in_both_layouts(layout):
    torch.manual_seed(1)
    base = torch.randn(1, 8, 7, 6)
    target = gram(torch.randn(1, 8, 5, 5))
    ref = base.clone().requires_grad_()
    (3.0 * _autograd_style_loss(ref, target)).backward()
    f = base.contiguous(memory_format=layout).requires_grad_()
    (3.0 * style_loss(f, target)).backward()
    assert f.grad.shape == f.shape
    torch.testing.assert_close(f.grad, ref.grad, rtol=1e-4, atol=1e-7)


def test_style_loss_on_bf16_features_is_float32_with_a_bf16_gradient():
    torch.manual_seed(2)
    base = torch.rand(1, 16, 8, 8)
    target = gram(torch.rand(1, 16, 8, 8))
    f = base.to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
    loss = style_loss(f, target)
    assert loss.dtype == torch.float32
    loss.backward()
    assert f.grad.dtype == torch.bfloat16
    ref = base.to(torch.bfloat16).float().requires_grad_()
    _autograd_style_loss(ref, target).backward()
    # bf16 has 8 significant bits: the gradient agrees to about 1%
    torch.testing.assert_close(f.grad.float(), ref.grad, rtol=2e-2, atol=1e-2 * float(ref.grad.abs().max()))
