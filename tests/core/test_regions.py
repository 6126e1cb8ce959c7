"""Spatial control: masks, their propagation to the layers, guided Grams, regional styles
and the keep mask."""

import json

import pytest
import torch
from PIL import Image

from nstyle.core import regions
from nstyle.io.images import load_mask
from nstyle.core.losses.gram import gram, guided_gram, guided_style_loss, style_loss
from nstyle.cli.main import main, split_style_masks
from nstyle.options.config import Config
from nstyle.core.stylizer import Stylizer
from nstyle.core.image_tensors import resize_tensor
from nstyle.errors import BadImage, BadOption
from nstyle.core.vgg import VGG19Features, preprocess
from tests.support.tensors import to_t


def _halves(h, w):
    left = torch.zeros(1, 1, h, w)
    left[..., : w // 2] = 1
    return left, 1 - left


def test_load_mask_any_mode_and_size(tmp_path):
    rgb = Image.new("RGB", (30, 20), (255, 255, 255))
    rgb.paste((0, 0, 0), (0, 0, 15, 20))
    rgb.save(tmp_path / "m.png")
    m = load_mask(tmp_path / "m.png")
    assert m.shape == (1, 1, 20, 30) and float(m[0, 0, 0, 0]) == 0 and float(m[0, 0, 0, -1]) == 1
    Image.new("L", (8, 8), 0).save(tmp_path / "black.png")
    with pytest.raises(BadImage, match="all black"):
        load_mask(tmp_path / "black.png")
    assert regions.resize_mask(m, 10, 15).shape == (1, 1, 10, 15)


def test_layer_masks_line_up_with_the_features_for_odd_sizes():
    vgg = VGG19Features("relu5_1")
    x = torch.zeros(1, 3, 61, 47)
    feats = vgg(x, ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "pool2"])
    mask = torch.ones(1, 1, 61, 47)
    for layer, f in feats.items():
        assert regions.layer_mask(mask, layer).shape[-2:] == f.shape[-2:], layer


def test_guided_gram_with_a_full_mask_is_the_plain_gram():
    f = torch.randn(1, 8, 6, 5)
    ones = torch.ones(1, 1, 6, 5)
    assert torch.allclose(guided_gram(f, ones), gram(f), atol=1e-5)
    target = torch.randn(1, 8, 8)
    assert torch.allclose(guided_style_loss(f, ones, target), style_loss(f, target))
    half = torch.zeros(1, 1, 6, 5)
    half[..., :3, :] = 1  # the region's own Gram, from its positions only
    assert torch.allclose(guided_gram(f, half), gram(f[..., :3, :]), atol=1e-5)
    assert float(guided_style_loss(f, torch.zeros_like(half), target)) == 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_guided_style_loss_gradient_is_the_formulas_and_zero_outside_the_masks_box(channels_last):
    """The hand-written backward on the mask's box against autograd through guided_gram."""
    torch.manual_seed(0)
    f = torch.randn(1, 6, 9, 11, dtype=torch.float64)
    if channels_last:
        f = f.to(memory_format=torch.channels_last)
    mask = torch.zeros(1, 1, 9, 11, dtype=torch.float64)
    mask[..., 2:7, 3:9] = torch.rand(5, 6, dtype=torch.float64) + 0.1
    assert regions.mask_box(mask) == (2, 7, 3, 9) and regions.mask_box(mask * 0) is None
    target = torch.randn(1, 6, 6, dtype=torch.float64)
    target = target @ target.transpose(1, 2)  # a Gram: symmetric
    ours, theirs = f.clone().requires_grad_(True), f.clone().requires_grad_(True)
    guided_style_loss(ours, mask, target).backward()
    share = mask.pow(2).sum() / (9 * 11)
    (share * (guided_gram(theirs, mask) - target).pow(2).sum() / (4 * 6 * 6)).backward()
    assert torch.allclose(ours.grad, theirs.grad, rtol=1e-5, atol=1e-9)
    assert float(ours.grad[..., :2, :].abs().sum()) == 0 and float(ours.grad[..., 9:].abs().sum()) == 0
    assert torch.autograd.gradcheck(lambda x: guided_style_loss(x, mask, target), (f.clone().requires_grad_(True),))


def test_plan_unmasked_styles_take_what_no_mask_claims_and_keep_is_removed():
    left, right = _halves(4, 4)
    keep = torch.zeros(1, 1, 4, 4)
    keep[..., 0, :] = 1
    plan = regions.plan(3, [left, None, None], [2.0, 1.0, 3.0], keep, 4, 4)
    assert len(plan) == 2
    masked, rest = plan
    assert masked.styles == {0: 1.0} and masked.weight == pytest.approx(2.0 * 3 / 6)
    assert torch.equal(masked.mask, left * (1 - keep))
    assert rest.styles == {1: 0.25, 2: 0.75} and torch.equal(rest.mask, right * (1 - keep))
    # no masks at all: one region over everything, as before regions existed
    (only,) = regions.plan(2, [None, None], None, None, 4, 4)
    assert only.mask is None and only.styles == {0: 0.5, 1: 0.5}
    # masks that cover everything leave no region for unmasked styles
    assert len(regions.plan(3, [left, right, None], None, None, 4, 4)) == 2


def test_plan_apart_splits_the_unmasked_region_in_two_with_the_same_styles():
    left, right = _halves(4, 4)
    inside, outside = regions.plan(2, [None, None], [1.0, 3.0], None, 4, 4, apart=right)
    assert inside.styles == outside.styles == {0: 0.25, 1: 0.75}
    assert inside.weight == outside.weight == 1.0
    assert torch.equal(inside.mask, right) and torch.equal(outside.mask, left)
    # any size, brought to the output's; soft edges split between the two
    inside, outside = regions.plan(1, [None], None, None, 4, 4, apart=right[..., ::2, ::2])
    assert inside.mask.shape == (1, 1, 4, 4) and torch.allclose(inside.mask + outside.mask, torch.ones(1, 1, 4, 4))
    # a masked style keeps its region; only what no mask claims is split
    masked, *rest = regions.plan(2, [left, None], None, None, 4, 4, apart=torch.ones(1, 1, 4, 4))
    assert masked.styles == {0: 1.0} and torch.equal(masked.mask, left)
    assert len(rest) == 1 and torch.equal(rest[0].mask, right)  # the empty outside part is dropped
    # without apart, or with one too small to be a region, the plan is what it was
    (only,) = regions.plan(1, [None], None, None, 4, 4, apart=None)
    assert only.mask is None
    (only,) = regions.plan(1, [None], None, None, 4, 4, apart=torch.zeros(1, 1, 4, 4))
    assert only.mask is None


def test_split_style_masks_cli_syntax(tmp_path):
    odd = tmp_path / "a:b.png"
    odd.write_bytes(b"x")
    styles, masks = split_style_masks(["s1.jpg:m1.png", "s2.jpg", str(odd)])
    assert styles == ["s1.jpg", "s2.jpg", str(odd)] and masks == ["m1.png", "none", "none"]
    assert split_style_masks(["s.jpg"]) == (["s.jpg"], None)


def _gram_distance(out_feats, mask, target):
    return float((guided_gram(out_feats, mask) - target).pow(2).sum())


def test_two_regions_each_take_their_own_style(style_img, style_img2):
    """Left half in style A, right half in style B, from a flat gray start."""
    a, b = to_t(style_img), to_t(style_img2)
    content = torch.full((1, 3, 48, 48), 0.5)
    left, right = _halves(48, 48)
    cfg = Config.from_options(size=48, content_weight=0, style_weight=1, tv_weight=0, init="noise",
                              iterations=30, style_layers="relu1_1,relu2_1,relu3_1")
    stylizer = Stylizer(cfg)
    result = stylizer.run(content, [a, b], style_masks=[left, right])
    # relu1_1's term is orders of magnitude smaller than the others' (the paper's weighting),
    # so in 30 iterations from white noise it has hardly moved yet: compare where it has
    layers = ["relu2_1", "relu3_1"]
    feats = stylizer.vgg(preprocess(result.image), layers)
    target_a = stylizer.network.style_targets(a, 48)
    target_b = stylizer.network.style_targets(b, 48)
    for layer in layers:
        ml, mr = regions.layer_mask(left, layer), regions.layer_mask(right, layer)
        f = feats[layer]
        assert _gram_distance(f, ml, target_a[layer]) < 0.5 * _gram_distance(f, ml, target_b[layer]), layer
        assert _gram_distance(f, mr, target_b[layer]) < 0.5 * _gram_distance(f, mr, target_a[layer]), layer


def test_keep_mask_region_stays_the_content(content_img, style_img):
    content = to_t(content_img)
    ref = resize_tensor(content, 48)
    h, w = ref.shape[-2:]
    keep = torch.zeros(1, 1, h, w)
    keep[..., : h // 2, : w // 2] = 1
    cfg = Config.from_options(size=48, iterations=10, style_weight=1e5)
    out = Stylizer(cfg).run(content, [style_img and to_t(style_img)], keep_mask=keep).image
    kept = (out - ref)[..., : h // 2, : w // 2].abs()
    elsewhere = (out - ref)[..., h // 2:, w // 2:].abs()
    assert float(kept.max()) < 2 / 255  # the photo, to rounding
    assert float(elsewhere.mean()) > 10 * float(kept.mean()) + 0.01  # stylized around it


def test_style_scale_applies_to_regional_styles(style_img):
    s = Stylizer(Config.from_options(size=64, style_scale=0.5))
    left, _ = _halves(48, 64)
    (region,) = s.network.style_regions([to_t(style_img)], [left], None, 64, 48, 64)
    assert region.mask is not None
    # the style image at half the 64 px scale: its targets at a 32 px scale
    at_32 = Stylizer(Config.from_options(size=32)).network.style_targets(to_t(style_img), 32)
    assert all(torch.equal(region.targets[layer], at_32[layer]) for layer in at_32)
    big = Stylizer(Config.from_options(size=64, style_scale=2.0)).network.style_regions(
        [to_t(style_img)], [left], None, 64, 48, 64)[0]
    assert not torch.allclose(region.targets["relu1_1"], big.targets["relu1_1"], rtol=0.05)


def test_engine_checks_mask_counts(content_img, style_img):
    with pytest.raises(BadOption, match="2 style masks for 1 style"):
        Stylizer(Config.from_options(size=32, iterations=1)).run(
            to_t(content_img), [to_t(style_img)], style_masks=[None, None])


def _write_masks(tmp_path, size=(64, 48)):
    left = Image.new("L", size, 0)
    left.paste(255, (0, 0, size[0] // 2, size[1]))
    left.save(tmp_path / "left.png")
    right = Image.eval(left, lambda v: 255 - v)
    right.save(tmp_path / "right.png")
    corner = Image.new("L", (16, 12), 0)
    corner.paste(255, (0, 0, 8, 6))
    corner.save(tmp_path / "corner.png")  # another size than the content: resized
    return tmp_path / "left.png", tmp_path / "right.png", tmp_path / "corner.png"


def test_cli_regional_styles_both_syntaxes_and_keep_mask(tmp_path, content_path, style_path, style_img2, capsys):
    left, right, corner = _write_masks(tmp_path)
    s2 = tmp_path / "s2.png"
    style_img2.save(s2)
    fast = ["--size", "32", "--iterations", "2", "-q"]
    out = tmp_path / "a.png"
    assert main([str(content_path), f"{style_path}:{left}", f"{s2}:{right}", "-o", str(out),
                 "--keep-mask", str(corner), *fast]) == 0, capsys.readouterr().err
    rec = json.loads((tmp_path / "a.png.json").read_text())
    assert rec["inputs"]["style_masks"] == [str(left), str(right)]
    assert rec["inputs"]["keep_mask"] == str(corner) and "regions" not in rec["config"]
    assert rec["inputs"]["styles"] == [str(style_path), str(s2)]
    out2 = tmp_path / "b.png"
    assert main([str(content_path), str(style_path), str(s2), "--mask", str(left), "--mask", "none",
                 "-o", str(out2), *fast]) == 0
    rec = json.loads((tmp_path / "b.png.json").read_text())
    assert rec["inputs"]["style_masks"] == [str(left), None]


@pytest.mark.parametrize("case", ["count", "both", "missing", "black"])
def test_cli_bad_masks_exit_2(tmp_path, content_path, style_path, capsys, case):
    left, _, _ = _write_masks(tmp_path)
    Image.new("L", (8, 8), 0).save(tmp_path / "black.png")
    out = tmp_path / "out.png"
    argv = {
        "count": [content_path, style_path, "--mask", f"{left},{left}"],
        "both": [content_path, f"{style_path}:{left}", "--mask", left],
        "missing": [content_path, style_path, "--keep-mask", tmp_path / "nope.png"],
        "black": [content_path, f"{style_path}:{tmp_path / 'black.png'}"],
    }[case]
    code = main([str(a) for a in argv] + ["-o", str(out), "--size", "32", "--iterations", "1", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("nstyle: error: "), err
    assert not out.exists()
