import math

import pytest

from nstyle.options.config import Config, iter_options
from nstyle.errors import BadOption


def test_defaults_are_the_papers_layers_weighted_by_inverse_squared_channels():
    """(And relu3_1 beside the paper's relu4_2 for the content, at a tenth of its weight:
    it holds the photo at the last scale, tests/core/test_coarse_only_layers.py.)"""
    c = Config()
    assert c.loss.content_layers == ("relu4_2", "relu3_1")
    assert c.loss.style_layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    weights = c.loss.layer_weights("style")
    assert sum(weights.values()) == pytest.approx(1.0)
    # w ~ 1/N²: 64 -> 128 -> 256 -> 512 channels divide the weight by 4 each time
    assert weights["relu1_1"] == pytest.approx(4 * weights["relu2_1"]) == pytest.approx(16 * weights["relu3_1"])
    assert weights["relu4_1"] == pytest.approx(weights["relu5_1"]) == pytest.approx(weights["relu3_1"] / 4)
    # the rule follows the layers a user names; explicit weights are taken as given
    c = Config.from_options(style_layers="relu2_1,relu4_1")
    assert c.loss.layer_weights("style") == {"relu2_1": pytest.approx(16 / 17), "relu4_1": pytest.approx(1 / 17)}
    assert c.loss.layer_weights("content") == {"relu4_2": 1.0, "relu3_1": 0.1}


def test_flat_options_round_trip():
    c = Config.from_options(style_weight="1e5", style_layers="relu1_1, relu2_1", iterations="7",
                            style_layer_weights=[1, 3])
    assert c.loss.style_weight == 1e5 and c.optim.iterations == 7
    assert c.loss.style_layers == ("relu1_1", "relu2_1")
    assert c.loss.layer_weights("style") == {"relu1_1": 1.0, "relu2_1": 3.0}
    assert Config.from_dict(c.to_dict()) == c
    assert {name for section in c.to_dict().values() for name in section} == {o.name for o in iter_options()}


@pytest.mark.parametrize("options, match", [
    ({"style_wieght": 1}, "did you mean style_weight"),
    ({"content_layers": "relu9_1"}, "unknown content layer"),
    ({"style_weight": -1}, ">= 0"),
    ({"content_weight": math.inf}, "finite"),
    ({"tv_weight": float("nan")}, "finite"),
    ({"iterations": 0}, "iterations"),
    ({"iterations": 2.5}, "expected int"),
    ({"size": 8}, "size"),
    ({"size": 100000}, "size"),
    ({"style_scale": 0}, "style_scale"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"lr": -1}, "lr"),
    ({"lr": 1e308}, r"lr must be a number > 0 and <= 10000"),
    ({"seed": 10**30}, r"seed must be an integer in 0..4294967295"),
    ({"seed": -1}, "seed must be"),
    ({"history_size": 10**30}, r"history_size must be an integer in 1..1000"),
    ({"history_size": "200000000"}, "history_size must be"),
    ({"style_layer_weights": "1,2"}, "2 values but there are 5"),
    ({"style_blend_weights": "0,0"}, "all be zero"),
    ({"pooling": "median"}, "pooling"),
    ({"device": "tpu"}, "device"),
    ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16"),
    ({"content_weight": 0, "style_weight": 0, "tv_weight": 0}, "nothing to optimize"),
    ({"progression": "p.mp4"}, "progression"),
    ({"style_weight": "lots"}, "expected float"),
])
def test_invalid_options_raise_bad_option(options, match):
    with pytest.raises(BadOption, match=match):
        Config.from_options(**options)


def test_every_option_has_help():
    for opt in iter_options():
        assert opt.help and len(opt.help) > 10, opt.name


def test_every_option_carries_a_label_of_its_own():
    """The page's labels come from the option tree (``option(..., label=...)``): none is
    missing, empty or shared, so a new option arrives on the page named."""
    from nstyle.options.config import iter_options

    labels = [o.label for o in iter_options()]
    assert all(label.strip() for label in labels)
    assert len(set(labels)) == len(labels)
