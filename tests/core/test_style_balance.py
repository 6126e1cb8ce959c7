"""--style-balance: a faint painting's style layers weighed up towards a typical painting's."""

import math

import pytest
import torch

from nstyle.core import losses
from nstyle.core.losses.gram import REFERENCE_ENERGY, gram, style_loss
from nstyle.core.objective import balanced_style_weights, for_scale
from nstyle.core.regions import Region
from nstyle.core.stylizer import Stylizer
from nstyle.errors import BadOption
from nstyle.options.config import Config
from tests.support.tensors import to_t

GRAM = losses.get("gram")


def target_of_energy(layer_energy: float, channels: int = 4) -> torch.Tensor:
    """A (1, N, N) Gram target whose ``GramLoss.energy`` is ``layer_energy``."""
    # every entry v: Σ A² / (4N²) = N² v² / (4N²) = v² / 4
    return torch.full((1, channels, channels), 2.0 * math.sqrt(layer_energy))


def test_the_energy_is_the_style_loss_of_an_output_with_no_texture():
    features = torch.rand(1, 8, 6, 5)
    target = gram(features)
    assert GRAM.energy(target) == pytest.approx(float(style_loss(torch.zeros(1, 8, 6, 5), target)), rel=1e-5)
    assert GRAM.energy(target_of_energy(3.0)) == pytest.approx(3.0, rel=1e-5)


def test_a_faint_painting_is_lifted_by_the_ratio_to_the_power_and_a_vivid_one_kept():
    weights = {"relu1_1": 0.7, "relu3_1": 0.05}
    faint = Region({0: 1.0}, None, targets={
        "relu1_1": target_of_energy(REFERENCE_ENERGY["relu1_1"] / 16),
        "relu3_1": target_of_energy(REFERENCE_ENERGY["relu3_1"] * 4)})  # vivid there
    balanced = balanced_style_weights(weights, GRAM, [faint], 0.5)
    assert balanced["relu1_1"] == pytest.approx(0.7 * 4, rel=1e-4)
    assert balanced["relu3_1"] == 0.05
    assert balanced_style_weights(weights, GRAM, [faint], 1.0)["relu1_1"] == pytest.approx(0.7 * 16, rel=1e-4)


def test_regions_count_by_their_weights():
    """Two paintings in regions: their energies averaged by region weight (3:1 here)."""
    ref = REFERENCE_ENERGY["relu2_1"]
    a = Region({0: 1.0}, None, weight=3.0, targets={"relu2_1": target_of_energy(ref / 10)})
    b = Region({1: 1.0}, None, weight=1.0, targets={"relu2_1": target_of_energy(ref * 0.6)})
    mean = (3 * ref / 10 + ref * 0.6) / 4
    balanced = balanced_style_weights({"relu2_1": 1.0}, GRAM, [a, b], 1.0)
    assert balanced["relu2_1"] == pytest.approx(ref / mean, rel=1e-4)


def test_the_objective_carries_the_lifted_weights_only_when_asked():
    region = Region({0: 1.0}, None, targets={
        layer: target_of_energy(REFERENCE_ENERGY[layer] / 9) for layer in REFERENCE_ENERGY})
    plain = Config().loss
    lifted = Config.from_options(style_balance=0.5).loss
    before = {t.layer: t.weight for t in for_scale(plain, {"relu4_2": None, "relu3_1": None}, [region]).style}
    after = {t.layer: t.weight for t in for_scale(lifted, {"relu4_2": None, "relu3_1": None}, [region]).style}
    assert before.keys() == after.keys()
    for layer in before:
        assert after[layer] == pytest.approx(3 * before[layer], rel=1e-4)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), True, "x"])
def test_bad_values_are_refused(value):
    with pytest.raises(BadOption, match="style_balance"):
        Config.from_options(style_balance=value)


@pytest.mark.parametrize("options, message", [
    ({"style_loss": "meancov"}, "style_balance cannot be used with style_loss meancov"),
    ({"method": "nnst"}, "--method nnst does not support style_balance"),
])
def test_losses_and_methods_without_gram_targets_refuse_it(content_img, style_img, options, message):
    """Before any work: nnst as the options are read, meancov when the run is planned."""
    with pytest.raises(BadOption, match=message):
        config = Config.from_options(size=32, iterations=1, device="cpu", style_balance=0.5, **options)
        Stylizer(config).plan(to_t(content_img), [to_t(style_img)])


def test_a_faint_painting_moves_the_photo_further_when_lifted(content_img, style_img):
    """The cat painted after a washed-out copy of the Hubble field (a tenth of its contrast,
    on grey): lifted, its style term pulls harder, so the output leaves the photo further."""
    content = to_t(content_img)
    faint = 0.5 + 0.1 * (to_t(style_img) - 0.5)
    moved = {}
    for balance in (0.0, 1.0):
        config = Config.from_options(size=48, scales=(48,), iterations=12, precision="fp32", device="cpu",
                                     seed=0, style_balance=balance)
        image = Stylizer(config).run(content, [faint]).image
        moved[balance] = float((image - torch.nn.functional.interpolate(
            content, size=image.shape[-2:], mode="bilinear", antialias=True)).abs().mean())
    assert moved[1.0] > 1.1 * moved[0.0]  # 0.107 against 0.087 when written
