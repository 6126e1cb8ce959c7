"""The same checks on every registered style loss (``nstyle.core.losses.REGISTRY``): a new
loss gets them by being registered.

Each check builds the loss's targets and terms through its ``StyleLoss`` interface alone, on
small random features (two layers, four channels), so they say nothing about VGG: whole
runs per loss are in tests/core/test_style_losses.py.
"""

import pytest
import torch

from nstyle.core import losses
from nstyle.core.regions import Region
from nstyle.errors import BadOption
from nstyle.options.config import STYLE_LOSSES

LOSSES = sorted(losses.REGISTRY)
LAYER_WEIGHTS = {"relu1_1": 0.5, "relu2_1": 0.5}
IMAGE_HW = (8, 8)  # relu1_1 at 8 x 8, relu2_1 at 4 x 4


def _features(seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"relu1_1": torch.rand(1, 4, 8, 8, generator=gen, dtype=dtype),
            "relu2_1": torch.rand(1, 4, 4, 4, generator=gen, dtype=dtype)}


def _region(loss, parts) -> Region:
    """One unmasked region whose target blends ``parts``: (weight, style features)."""
    made = [(w, loss.targets(f, LAYER_WEIGHTS, IMAGE_HW)) for w, f in parts]
    region = Region({i: w for i, (w, _) in enumerate(parts)}, None)
    region.targets = {key: loss.blend([(w, t[key]) for w, t in made]) for key in made[0][1]}
    return region


def _loss(loss, region, features, start=None) -> torch.Tensor:
    """The loss's terms (β = 1) at ``features``, their targets matched to ``start``."""
    terms = [t.matched(start or features, IMAGE_HW, [region])
             for t in loss.terms(LAYER_WEIGHTS, 1.0)]
    return sum(t.weight * t.evaluate(features, [region], IMAGE_HW) for t in terms)


def test_the_registry_holds_exactly_the_options_choices():
    assert tuple(losses.REGISTRY) == STYLE_LOSSES
    for name, loss in losses.REGISTRY.items():
        assert loss.name == name and losses.get(name) is loss
    with pytest.raises(BadOption, match="style_loss must be one of gram, meancov, neighbors"):
        losses.get("grma")


@pytest.mark.parametrize("name", LOSSES)
def test_zero_at_its_own_target_and_positive_elsewhere(name):
    loss = losses.get(name)
    style, other = _features(1), _features(2)
    region = _region(loss, [(1.0, style)])
    at_target = float(_loss(loss, region, style))
    elsewhere = float(_loss(loss, region, other))
    assert elsewhere > 0
    assert abs(at_target) <= 1e-5 * elsewhere, (at_target, elsewhere)


@pytest.mark.parametrize("name", LOSSES)
def test_blending_a_style_with_itself_changes_nothing(name):
    """1:3 of the same style is that style (Grams and moments add linearly; a bank keeps
    both copies, each weighted)."""
    loss = losses.get(name)
    style, other = _features(1), _features(2)
    alone = float(_loss(loss, _region(loss, [(1.0, style)]), other))
    blended = float(_loss(loss, _region(loss, [(0.25, style), (0.75, style)]), other))
    assert blended == pytest.approx(alone, rel=1e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_blending_two_styles_lands_between_them(name):
    loss = losses.get(name)
    a, b = _features(1), _features(3)
    to_a = float(_loss(loss, _region(loss, [(1.0, a)]), a))
    to_b = float(_loss(loss, _region(loss, [(1.0, b)]), a))
    mixed = float(_loss(loss, _region(loss, [(0.5, a), (0.5, b)]), a))
    assert to_a < mixed < to_b, (to_a, mixed, to_b)


@pytest.mark.parametrize("name", LOSSES)
def test_float64_gradcheck_on_a_tiny_input(name):
    loss = losses.get(name)
    style, start = _features(1, torch.float64), _features(2, torch.float64)
    region = _region(loss, [(1.0, style)])
    terms = [t.matched(start, IMAGE_HW, [region]) for t in loss.terms(LAYER_WEIGHTS, 1.0)]

    def value(x):  # the deeper layer varies: 64 inputs keep the numerical Jacobian quick
        features = {"relu1_1": start["relu1_1"], "relu2_1": x}
        return sum(t.weight * t.evaluate(features, [region], IMAGE_HW) for t in terms).double()

    x = start["relu2_1"].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(value, (x,), atol=1e-4, rtol=1e-3)


def _tiled_and_whole(name: str):
    """Loss terms and gradient of a 64 x 48 image, whole and on four 32 px tiles, with a
    masked style beside two blended ones (VGG to relu2_1: 16 px halos suffice)."""
    from nstyle.core import tiling
    from nstyle.core.objective import for_scale, with_total
    from nstyle.core.stylizer import Stylizer
    from nstyle.core.tiles import make_tiles
    from nstyle.core.vgg import preprocess
    from nstyle.options.config import Config

    config = Config.from_options(size=64, style_layers="relu1_1,relu2_1", content_layers="relu2_1",
                                 precision="fp32", style_loss=name, style_blend_weights=(1.0, 2.0, 1.0),
                                 tv_weight=0.0)
    st = Stylizer(config, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 48, 64, generator=gen)
    styles = [torch.rand(1, 3, 40, 40, generator=gen) for _ in range(3)]
    bgr = preprocess(content)
    mask = torch.zeros(1, 1, 48, 64)
    mask[..., :20] = 1
    start = bgr + 30 * torch.randn(bgr.shape, generator=gen)
    out = []
    for tile in (0, 32):
        regions = st.network.style_regions(styles, [mask, None, None], None, 64, 48, 64, tile)
        objective = for_scale(config.loss, st.network.content_targets(bgr, tile), regions)
        image = start.clone().requires_grad_(True)
        if tile:
            terms, grad = tiling.loss_and_grad(st.vgg, image, make_tiles(48, 64, tile, 16), objective)
            terms = with_total(dict(terms))
        else:
            terms = objective.evaluate(st.vgg(image, list(objective.layers)), image)
            terms["total"].backward()
            grad = image.grad
        out.append(({k: float(v.detach()) for k, v in terms.items()}, grad))
    return out


@pytest.mark.parametrize("name", LOSSES)
def test_tiles_exactly_or_refuses_in_one_line(name):
    """A loss that tiles gives the whole image's terms and gradient tile by tile; one that
    cannot refuses a tile size with its one-line reason."""
    loss = losses.get(name)
    if loss.tiles:
        loss.check(64)  # accepted
        (whole, grad_whole), (tiled, grad_tiled) = _tiled_and_whole(name)
        assert [k for k in whole if k.startswith("style.")]
        for k in whole:
            assert tiled[k] == pytest.approx(whole[k], rel=1e-4), k
        assert float((grad_tiled - grad_whole).norm() / grad_whole.norm()) < 1e-4
        return
    assert loss.untiled_reason and "\n" not in loss.untiled_reason
    with pytest.raises(BadOption) as err:
        loss.check(64)
    assert str(err.value) == loss.untiled_reason
    loss.check(None)
    loss.check(0)
