"""--method nnst (nstyle.core.nnst): each ingredient on tiny tensors and images."""

import pytest
import torch
import torch.nn.functional as F

from nstyle.core import nnst
from nstyle.core.nnst import (NNST_LAYERS, centred_cosine_distances, cosine_loss, final_pass_loss, flat,
                              hypercolumns, nearest_neighbours, rotations, scale_levels)
from nstyle.core.pyramid import decompose, reconstruct
from nstyle.core.stylizer import Stylizer
from nstyle.errors import BadOption
from nstyle.options.config import Config
from nstyle.options.layers import layer_channels, layer_stride
from tests.support.tensors import to_t


def _fake_features(h=32, w=24, value=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for layer in NNST_LAYERS:
        s, c = layer_stride(layer), layer_channels(layer)
        shape = (1, c, max(1, h // s), max(1, w // s))
        out[layer] = torch.full(shape, float(value)) if value is not None else torch.rand(shape, generator=gen)
    return out


def test_the_ten_layers_are_vgg16s_names():
    assert NNST_LAYERS == ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3",
                           "relu4_1", "relu4_2", "relu4_3")


def test_hypercolumns_divide_by_channels_and_sit_at_a_quarter():
    hc = hypercolumns(_fake_features(value=3.0), (32, 24))
    channels = [layer_channels(layer) for layer in NNST_LAYERS]
    assert hc.shape == (1, sum(channels), 8, 6)
    start = 0
    for c in channels:
        assert torch.allclose(hc[:, start:start + c], torch.full_like(hc[:, start:start + c], 3.0 / c))
        start += c


def test_rotations_turn_the_painting():
    image = torch.arange(6.0).reshape(1, 1, 2, 3)
    turned = rotations(image, 4)
    assert [tuple(t.shape[-2:]) for t in turned] == [(2, 3), (3, 2), (2, 3), (3, 2)]
    assert torch.equal(turned[2], image.flip(2, 3))
    assert len(rotations(image, 1)) == 1


def test_centred_cosine_ignores_each_sets_own_offset():
    gen = torch.Generator().manual_seed(1)
    q, r = torch.randn(5, 7, generator=gen), torch.randn(9, 7, generator=gen)
    d = centred_cosine_distances(q, r)
    assert torch.allclose(d, centred_cosine_distances(q + 4.0, r - 2.5), atol=1e-5)
    assert d.min() >= 0 and d.max() <= 2


def test_nearest_neighbours_find_the_copy_in_chunks(monkeypatch):
    gen = torch.Generator().manual_seed(2)
    reference = torch.randn(50, 16, generator=gen)
    order = torch.randperm(50, generator=gen)[:20]
    queries = reference[order] * 3.0  # cosine does not see the length
    assert torch.equal(nearest_neighbours(queries, reference), order)
    monkeypatch.setattr(nnst, "SEARCH_CHUNK_BYTES", 4 * 50 * 3)  # three rows a chunk
    assert torch.equal(nearest_neighbours(queries, reference), order)


def test_cosine_loss_is_zero_at_its_targets_and_has_a_gradient():
    t = torch.rand(1, 12, 4, 5)
    assert cosine_loss(t * 2, t).abs() < 1e-6
    x = torch.rand(1, 12, 4, 5, requires_grad=True)
    loss = cosine_loss(x, t)
    loss.backward()
    assert loss > 0 and x.grad.abs().sum() > 0


def test_final_pass_matches_each_layer_against_its_own_features():
    """The official code reused relu3's sampled buffer as the query of layers it did not
    subsample; here a layer's query is its own features: an output whose features are the
    painting's has zero loss at every layer, whole or sampled."""
    features = _fake_features(h=160, w=96)  # relu1_x 160 a side: sampled; relu4_x 20: whole
    style = {layer: [f] for layer, f in features.items()}
    gen = torch.Generator().manual_seed(0)
    assert final_pass_loss(features, style, gen) < 1e-4
    other = _fake_features(h=160, w=96, seed=5)
    assert final_pass_loss(other, style, gen) > 0.5


def test_final_pass_takes_the_minimum_distance_and_its_gradient():
    """The final pass finds each position's nearest painting feature without gradients and
    then takes the distance to it: the same value and gradient as the minimum over the whole
    distance matrix, which the official code backpropagates through."""
    output, painting = _fake_features(40, 36, seed=3), _fake_features(40, 36, seed=4)
    style = {layer: [f, f.flip(3)] for layer, f in painting.items()}
    leaves = {layer: f.clone().requires_grad_(True) for layer, f in output.items()}
    loss = final_pass_loss(leaves, style, torch.Generator().manual_seed(0))
    loss.backward()
    whole = {layer: f.clone().requires_grad_(True) for layer, f in output.items()}
    expected = sum(centred_cosine_distances(flat(whole[layer]), torch.cat([flat(s) for s in style[layer]]))
                   .min(1).values.mean() for layer in NNST_LAYERS)  # no layer sampled at 40 px
    expected.backward()
    assert torch.allclose(loss, expected, atol=1e-5)
    for layer in NNST_LAYERS:
        assert torch.allclose(leaves[layer].grad, whole[layer].grad, atol=1e-6), layer


def test_final_pass_samples_large_layers_at_random_offsets():
    """relu1_x at 140 positions a side is sampled with stride 2, from an offset drawn each
    step: the same images give a different loss with another draw, and the same draw the
    same loss."""
    output, painting = _fake_features(140, 140, seed=1), _fake_features(140, 140, seed=2)
    style = {layer: [f] for layer, f in painting.items()}
    values = {float(final_pass_loss(output, style, torch.Generator().manual_seed(seed))) for seed in range(4)}
    assert len(values) > 1
    again = [float(final_pass_loss(output, style, torch.Generator().manual_seed(0))) for _ in range(2)]
    assert again[0] == again[1]


def test_scales_run_from_64_px_up():
    assert scale_levels(512) == [3, 2, 1, 0]
    assert scale_levels(1024) == [4, 3, 2, 1, 0]
    assert scale_levels(128) == [1, 0]
    assert scale_levels(64) == [0] and scale_levels(40) == [0]


# ---- the schedule, on a 32 px image with the coarsest scale at 16 px -------------------


@pytest.fixture
def tiny(monkeypatch, content_img, style_img):
    from tests.support.tensors import to_t

    monkeypatch.setattr(nnst, "COARSEST_SIZE", 16)
    content = F.interpolate(to_t(content_img), size=(24, 32), mode="bilinear", antialias=True)
    style = F.interpolate(to_t(style_img), size=(24, 32), mode="bilinear", antialias=True)
    return content.clamp(0, 1), style.clamp(0, 1)


def _vgg(**options):
    return nnst.network(Config.from_options(method="nnst", **options), torch.device("cpu"))


def test_precision_bf16_runs_the_network_in_bfloat16_and_auto_stays_float32(tiny, content_img, style_img):
    """auto is float32 for nnst (as it was judged); bf16, named, is what it says: the
    network in bfloat16, its features handed on in float32, and the result says so."""
    assert next(_vgg().parameters()).dtype == torch.float32
    assert next(_vgg(precision="auto").parameters()).dtype == torch.float32
    vgg = _vgg(precision="bf16")
    assert next(vgg.parameters()).dtype == torch.bfloat16
    content, style = tiny
    config = Config.from_options(method="nnst", size=32, scale_iterations=(1,), style_rotations=1,
                                 precision="bf16")
    run = nnst.NNSTRun(vgg, content, style, 1, 1e-3, 1, None, torch.Generator())
    assert all(f.dtype == torch.float32 for f in run.features(content).values())
    result = Stylizer(config).run(to_t(content_img), [to_t(style_img)])
    assert result.precision == "bf16" and torch.isfinite(result.image).all()
    assert Stylizer(Config.from_options(config, precision="auto")).run(
        to_t(content_img), [to_t(style_img)]).precision == "fp32"


def test_queries_blend_output_and_content_and_the_start_is_the_blurred_content(tiny, monkeypatch):
    content, style = tiny
    queries, first_images = [], []
    original = nnst.NNSTRun.targets

    def spy(self, query, style_here):
        queries.append(query.clone())
        return original(self, query, style_here)

    monkeypatch.setattr(nnst.NNSTRun, "targets", spy)
    config = Config.from_options(method="nnst", size=32, scale_iterations=(1,), style_rotations=1, lr=1e-12)
    image, losses, events = nnst.stylize(_vgg(), content, style, config,
                                         callback=lambda e: first_images.append(e.image))
    levels = decompose(content, 8)
    coarse_content = reconstruct(levels[1:])
    assert torch.allclose(queries[0], coarse_content, atol=1e-6)  # the coarsest: content alone
    # then 0.25 x (the output's coarse levels under the content's finest) + 0.75 x content
    output_here = F.interpolate(first_images[0], size=(24, 32), mode="bilinear", align_corners=False) + levels[0]
    assert torch.allclose(queries[1], 0.25 * output_here + 0.75 * content, atol=1e-4)
    # the start (lr ~0): the content with its finest level zeroed, i.e. blurred to 16 px
    assert torch.allclose(first_images[0], coarse_content.clamp(0, 1), atol=1e-5)
    assert events.done == 3 and set(losses) == {"style.nnst", "total"}


def test_each_scale_optimises_only_its_level_and_the_coarser_ones(tiny, monkeypatch):
    content, style = tiny
    calls = []
    original = nnst.LaplacianPyramid.trainable

    def spy(self, level):
        calls.append((self, level))
        return original(self, level)

    monkeypatch.setattr(nnst.LaplacianPyramid, "trainable", spy)

    def stop_after_first_scale(event):
        if event.scale == 1 and event.iteration == 3:
            event.stop()

    config = Config.from_options(method="nnst", size=32, scale_iterations=(3,), style_rotations=1, lr=0.05)
    nnst.stylize(_vgg(), content, style, config, callback=stop_after_first_scale)
    (pyramid, level), = calls
    assert level == 1  # 16 px: level 1 and coarser; the finest level stayed the zeros of the start
    assert torch.equal(pyramid.levels[0], torch.zeros_like(pyramid.levels[0]))
    assert not torch.allclose(pyramid.image(1), reconstruct(decompose(content, 8)[1:]), atol=1e-3)
    calls.clear()
    nnst.stylize(_vgg(), content, style, config)
    assert [level for _, level in calls] == [1, 0, 0]  # 16 px, 32 px, the final pass


def test_nnst_lowers_its_loss_and_ends_with_the_colour_finish(tiny):
    content, style = tiny
    losses = []
    config = Config.from_options(method="nnst", size=32, scale_iterations=(6,), style_rotations=4, lr=0.02)
    result = Stylizer(config).run(content, [style], callback=lambda e: losses.append((e.scale, e.total)))
    first = [v for s, v in losses if s == 1]
    assert first[-1] < first[0]
    assert result.image.shape == (1, 3, 24, 32) and result.iterations == 18 and result.plan is None
    plain = Stylizer(Config.from_options(method="nnst", size=32, scale_iterations=(6,), style_rotations=4,
                                         lr=0.02, color_finish="none")).run(content, [style])
    from nstyle.core.color_finish import oklab_finish

    assert torch.allclose(result.image, oklab_finish(plain.image, content, [style]), atol=1e-5)


def test_nnst_refuses_what_it_does_not_do(tiny):
    content, style = tiny
    st = Stylizer(Config.from_options(method="nnst", size=32))
    with pytest.raises(BadOption, match="exactly one style"):
        st.run(content, [style, style])
    with pytest.raises(BadOption, match="keep mask"):
        st.run(content, [style], keep_mask=torch.ones(1, 1, 8, 8))
    with pytest.raises(BadOption, match="preserve_colors"):
        Config.from_options(method="nnst", preserve_colors="luminance")
    with pytest.raises(BadOption, match="one number"):
        Config.from_options(method="nnst", scale_iterations=(3, 4))
    with pytest.raises(BadOption, match="choose one"):
        Config.from_options(color_finish="oklab", preserve_colors="swap")


def test_the_cli_runs_it(tmp_path, content_img, style_img):
    import json

    from nstyle.cli.main import main

    content_img.save(tmp_path / "c.png")
    style_img.save(tmp_path / "s.png")
    out = tmp_path / "out.png"
    assert main([str(tmp_path / "c.png"), str(tmp_path / "s.png"), "-o", str(out), "-q", "--method", "nnst",
                 "--size", "32", "--scale-iterations", "2", "--style-rotations", "1"]) in (0, None)
    record = json.loads((tmp_path / "out.png.json").read_text())
    assert out.exists() and record["config"]["optim"]["method"] == "nnst" and record["iterations"] == 4
