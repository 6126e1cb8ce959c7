"""Scale control and large outputs: the coarse-to-fine schedule, scale mixing, exact tiling
and the memory estimate that refuses runs that cannot fit."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nstyle.core import regions, tiling
from nstyle.core.tiles import make_tiles
from nstyle.options.layers import halo_for, receptive_radius
from nstyle.core.losses.gram import gram, style_loss
from nstyle.cli.main import main
from nstyle.options.config import Config
from nstyle.core.stylizer import Stylizer
from nstyle.core.image_tensors import resize_tensor
from nstyle.errors import BadOption, TooLarge
from nstyle.core.objective import for_scale, with_total
from nstyle.core.vgg import deprocess, preprocess
from tests.support.tensors import to_t


def test_automatic_pyramid_and_iterations_per_scale():
    assert Config.from_options(size=256).scale_sizes == (256,)
    assert Config.from_options(size=512).scale_sizes == (256, 512)
    assert Config.from_options(size=2048).scale_sizes == (256, 512, 1024, 2048)
    assert Config.from_options(size=700).scale_sizes == (175, 350, 700)
    c = Config.from_options(size=2048, iterations=400)
    assert c.scale_iteration_counts == (280, 200, 100, 50) and c.output_size == 2048
    c = Config.from_options(scales="64,128,256", scale_iterations="9")
    assert c.scale_sizes == (64, 128, 256) and c.scale_iteration_counts == (9, 9, 9) and c.output_size == 256
    assert Config.from_options(scales="64,128", scale_iterations="5,2").scale_iteration_counts == (5, 2)


def test_the_first_of_several_scales_runs_seventy_and_the_last_at_most_thirty_percent():
    """Judged blind at 512 px: 30 last-scale iterations tied with 50 in 6 of 6 pairs, and
    70 first-scale iterations with 100 (preferred 1, lost 1, tied 4)."""
    assert Config.from_options(size=512).scale_iteration_counts == (70, 30)
    assert Config.from_options(size=512, iterations=40).scale_iteration_counts == (28, 12)
    assert Config.from_options(size=512, iterations=1).scale_iteration_counts == (1, 1)
    # with three or more scales the halving already ends below the cap
    assert Config.from_options(size=1024).scale_iteration_counts == (70, 50, 25)
    # a run of one scale has nothing coarser to lay out its shapes: all of --iterations
    assert Config.from_options(size=256).scale_iteration_counts == (100,)
    # the former defaults stay one option away
    assert Config.from_options(size=512, scale_iterations="100,30").scale_iteration_counts == (100, 30)
    assert Config.from_options(size=512, scale_iterations="100,50").scale_iteration_counts == (100, 50)


def test_fast_schedule_puts_more_of_the_work_at_small_scales():
    fast = Config.from_options(size=512, schedule="fast")
    assert fast.scale_sizes == (128, 256, 512) and fast.scale_iteration_counts == (30, 60, 20)
    assert Config.from_options(size=1024, schedule="fast").scale_iteration_counts == (30, 60, 20, 20)
    # --iterations scales it; one scale gets --iterations, as with the standard schedule
    assert Config.from_options(size=512, schedule="fast", iterations=50).scale_iteration_counts == (15, 30, 10)
    assert Config.from_options(size=128, schedule="fast", iterations=70).scale_iteration_counts == (70,)
    # explicit scales and iterations win over the preset
    c = Config.from_options(size=512, schedule="fast", scales="256,512", scale_iterations="7,3")
    assert c.scale_sizes == (256, 512) and c.scale_iteration_counts == (7, 3)


def test_cli_fast_schedule_reaches_the_plan(tmp_path, content_path, style_path, capsys):
    out = tmp_path / "o.png"
    code = main([str(content_path), str(style_path), "-o", str(out), "--size", "48", "--schedule", "fast",
                 "--iterations", "2", "-q"])
    assert code == 0, capsys.readouterr().err
    rec = json.loads((tmp_path / "o.png.json").read_text())
    assert rec["config"]["scale"]["schedule"] == "fast"
    # the plan a 512 px run would follow (planning does no work)
    plan = Stylizer(Config.from_options(size=512, schedule="fast")).plan(torch.rand(1, 3, 300, 400))
    assert [(s.size, s.width, s.iterations) for s in plan.scales] == [(128, 128, 30), (256, 256, 60),
                                                                        (512, 512, 20)]


@pytest.mark.parametrize("options, match", [
    ({"schedule": "quick"}, "schedule must be one of standard, fast"),
    ({"scales": "128,64"}, "grow"),
    ({"scales": "16,64"}, "scales must be integers in"),
    ({"scales": "64,128", "scale_iterations": "1,2,3"}, "3 values for 2 scales"),
    ({"size": 2048, "scale_iterations": "1,2"}, "2 values for 4 scales"),
    ({"scale_iterations": "0"}, ">= 1"),
    ({"fine_style": "a.png"}, "unknown option 'fine_style'"),
    ({"fine_layers": "relu9_1"}, "unknown fine layer"),
    ({"tile_size": 100}, "multiple of 16"),
    ({"memory_limit": -1}, "memory_limit"),
])
def test_scale_options_are_validated(options, match):
    with pytest.raises(BadOption, match=match):
        Config.from_options(**options)


def test_coarse_to_fine_runs_each_scale_from_the_upsampled_result(content_img, style_img):
    # steps so small that each event's image is still where its scale started
    cfg = Config.from_options(scales="32,64", scale_iterations="3,2", init="noise", optimizer="sgd",
                              lr=1e-9, tolerance=0)
    events = []
    result = Stylizer(cfg).run(to_t(content_img), [to_t(style_img)], callback=events.append)
    assert [(e.iteration, e.iterations, e.scale, e.scales, e.size) for e in events] == \
        [(1, 5, 1, 2, 32), (2, 5, 1, 2, 32), (3, 5, 1, 2, 32), (4, 5, 2, 2, 64), (5, 5, 2, 2, 64)]
    assert max(result.image.shape[-2:]) == 64 and result.iterations == 5
    first_end, second_start = events[2].image, events[3].image  # events keep their own images
    upsampled = F.interpolate(first_end, size=second_start.shape[-2:], mode="bicubic", align_corners=False)
    assert torch.allclose(second_start, upsampled.clamp(0, 1), atol=1e-4)
    fresh_noise = Stylizer(Config.from_options(size=64, init="noise")).initial_image(
        preprocess(resize_tensor(to_t(content_img), 64)), None)
    assert not torch.allclose(second_start, deprocess(fresh_noise), atol=0.1)  # not a new start
    assert [p["size"] for p in result.plan["scales"]] == [32, 64]
    assert [s.size for s in result.plan.scales] == [32, 64] and result.plan.total_iterations == 5


def test_stop_at_a_coarse_scale_still_returns_the_output_size(content_img, style_img):
    cfg = Config.from_options(scales="32,64", scale_iterations="3,3")
    result = Stylizer(cfg).run(to_t(content_img), [to_t(style_img)],
                               callback=lambda e: e.iteration == 2 and e.stop())
    assert result.stopped_early and result.iterations == 2 and max(result.image.shape[-2:]) == 64


def test_tiled_gradient_equals_the_whole_image_gradient(content_img, style_img, style_img2):
    """Tiles of 32 px with 16 px halos (enough up to relu3_1) over a 64 x 48 image, with a
    regional style and a keep mask: the objective's terms and gradient are the untiled ones."""
    cfg = Config.from_options(size=64, content_layers="relu3_1", style_layers="relu1_1,relu2_1,relu3_1",
                              precision="fp32", tv_weight=1e-3)
    st = Stylizer(cfg)
    bgr = preprocess(resize_tensor(to_t(content_img), 64))
    h, w = bgr.shape[-2:]
    mask = torch.zeros(1, 1, h, w)
    mask[..., : w // 3] = 1
    keep = torch.zeros(1, 1, h, w)
    keep[..., :10, -12:] = 1
    start = bgr + 30 * torch.randn(bgr.shape, generator=torch.Generator().manual_seed(0))
    grads, values = [], []
    for tile in (0, 32):
        styles = [to_t(style_img), to_t(style_img2)]
        objective = for_scale(cfg.loss, st.network.content_targets(bgr, tile),
                              st.network.style_regions(styles, [mask, None], keep, 64, h, w, tile))
        assert [t.name for t in objective.content + objective.style] == \
            ["content.relu3_1", "style.relu1_1", "style.relu2_1", "style.relu3_1"]
        image = regions.compose(start, bgr, keep).requires_grad_(True)
        if tile:
            assert halo_for(objective.layers) == 16
            tiles = make_tiles(h, w, tile, 16)
            assert len(tiles) == 4
            terms, grad = tiling.loss_and_grad(st.vgg, image, tiles, objective)
            pixel = objective.pixel_terms(image)
            pixel["tv"].backward()
            terms = with_total({**{k: v.detach() for k, v in terms.items()}, **pixel})
            grad = grad + image.grad
        else:
            terms = objective.evaluate(st.vgg(image, objective.layers), image)
            terms["total"].backward()
            grad = image.grad
        values.append({k: float(v.detach()) for k, v in terms.items()})
        grads.append(grad)
    assert list(values[1]) == list(values[0]) and "tv" in values[0]
    for k in values[0]:
        assert values[1][k] == pytest.approx(values[0][k], rel=1e-4), k
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-4


def test_a_tiled_run_gives_the_untiled_result(content_img, style_img):
    """End to end, with tiles that really split the image: 4 tiles (64 px cores, 16 px halos,
    layers up to relu3_1) over a 96 x 72 output."""
    seen = {}

    def run(tile):
        cfg = Config.from_options(size=96, iterations=2, tile_size=tile, precision="fp32", balance_size=0,
                                  content_layers="relu3_1", style_layers="relu1_1,relu2_1,relu3_1")
        return Stylizer(cfg).run(to_t(content_img), [to_t(style_img)],
                                 callback=lambda e: seen.setdefault(tile, []).append(e.losses))

    whole, tiled = run(0), run(64)
    assert [p.tile for p in tiled.plan.scales] == [64] and [p.tile for p in whole.plan.scales] == [0]
    assert float((tiled.image - whole.image).abs().max()) < 2e-3
    for mine, theirs in zip(seen[64], seen[0]):
        assert mine == pytest.approx(theirs, rel=1e-3)
    # the recorded losses are the output's own, tiled or not (not the last event's)
    assert tiled.losses == pytest.approx(whole.losses, rel=2e-3)  # as close as the images
    assert tiled.losses["total"] != pytest.approx(seen[64][-1]["total"], rel=1e-3)


def test_recorded_losses_are_the_outputs_in_float32(content_img, style_img):
    """A bfloat16 run records its output's losses as float32 computes them: the first event
    of a float32 run started from that output reports them too."""
    common = dict(size=48, content_layers="relu3_1", style_layers="relu1_1,relu2_1,relu3_1")
    content, style = to_t(content_img), to_t(style_img)
    low = Stylizer(Config.from_options(iterations=2, precision="bf16", **common)).run(content, [style])
    seen = []
    Stylizer(Config.from_options(iterations=1, precision="fp32", **common)).run(
        content, [style], init_image=low.image, callback=lambda e: seen.append(e.losses))
    assert low.losses == pytest.approx(seen[0], rel=1e-4)


def test_receptive_fields_and_halos():
    assert receptive_radius("relu1_1") == 1
    assert receptive_radius("relu5_1") == 85
    assert halo_for(["relu4_2", "relu5_1"]) == 96
    tiles = make_tiles(100, 70, 32, 16)
    assert all(t.y0 % 16 == 0 and t.x0 % 16 == 0 for t in tiles)
    covered = torch.zeros(100, 70)
    for t in tiles:
        covered[t.cy0:t.cy1, t.cx0:t.cx1] += 1
    assert bool((covered == 1).all())  # the cores tile the image exactly once


def test_memory_estimate_grows_with_size_and_tiling_bounds_it():
    def peak(size, tile):
        cfg = Config.from_options(scales=str(size), scale_iterations="1", tile_size=tile, memory_limit=1000)
        return Stylizer(cfg).memory_plan((3 * size // 4, size), [(640, 1024)])[-1]["estimated_peak_gib"]

    assert peak(1024, 0) > 2 * peak(512, 0)
    assert peak(4096, 0) > 40  # the whole 4096 x 3072 image at once: far more than 24 GiB
    assert peak(4096, 1024) < 12  # tiled: bounded by the tile, plus image-sized buffers
    cfg = Config.from_options(size=4096, scale_iterations="1", memory_limit=20)
    plans = Stylizer(cfg).memory_plan((768, 1024), [(640, 1024)])
    assert [p["size"] for p in plans] == [256, 512, 1024, 2048, 4096]
    assert plans[-1]["tile"] > 0 and plans[0]["tile"] == 0  # tiles only where needed


def test_run_that_cannot_fit_is_refused_before_it_starts(content_img, style_img):
    cfg = Config.from_options(size=64, iterations=1, memory_limit=0.1)
    with pytest.raises(TooLarge, match=r"needs about .* GiB .* more than the 0\.1 GiB allowed"):
        Stylizer(cfg).run(to_t(content_img), [to_t(style_img)])


def test_cli_refuses_a_run_too_large_with_exit_2_and_writes_nothing(tmp_path, content_path, style_path, capsys):
    out = tmp_path / "out.png"
    code = main([str(content_path), str(style_path), "-o", str(out), "--size", "4096",
                 "--tile-size", "0", "--memory-limit", "16", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "GiB" in err and "--tile-size" in err
    assert not out.exists() and not (tmp_path / "out.png.json").exists()


def test_mix_scales_keeps_coarse_structure_and_takes_fine_texture(style_img, style_img2):
    fine, coarse = to_t(style_img), to_t(style_img2)  # Hubble texture on the coffee cup
    # the default (average) pooling: projected L-BFGS, which the mixing ran before Adam,
    # kept a correlation of only 0.14 with the coarse image's deep features here (0.45
    # under max pooling); Adam keeps 0.67 (0.68) while the fine Grams come as close
    cfg = Config.from_options(size=48, mix_iterations=40, tv_weight=0)
    st = Stylizer(cfg)
    mixed = st.mix_scales(fine, coarse)
    assert max(mixed.shape[-2:]) == 48
    layers = ["relu1_1", "relu2_1", "relu4_1"]
    from nstyle.core.vgg import VGG19Features

    vgg = VGG19Features("relu4_1")
    f_mixed = vgg(preprocess(mixed), layers)
    f_fine = vgg(preprocess(resize_tensor(fine, 48)), layers)
    f_coarse = vgg(preprocess(resize_tensor(coarse, 48)), layers)
    # fine texture: the fine image's Grams (relu1_1's term is the smaller one, so it moves slower)
    for layer, factor in (("relu1_1", 0.75), ("relu2_1", 0.3)):
        g = gram(f_mixed[layer])
        before = (gram(f_coarse[layer]) - gram(f_fine[layer])).norm()
        assert (g - gram(f_fine[layer])).norm() < factor * before, layer
    # coarse structure: deep features still correlate with the coarse image's, position by position
    a, b = f_mixed["relu4_1"].flatten(), f_coarse["relu4_1"].flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.6


def _mix_loss(image: torch.Tensor, fine: torch.Tensor, config: Config) -> float:
    """The scale mixing's objective, computed here from the paper's formula: the fine
    layers' Gram losses against ``fine`` at ``image``'s size, equal weights."""
    from nstyle.core.vgg import VGG19Features

    layers = config.scale.fine_layers
    vgg = VGG19Features(layers[-1], config.model.pooling, padding=config.model.padding)
    with torch.no_grad():
        f_image = vgg(preprocess(image), list(layers))
        f_fine = vgg(preprocess(resize_tensor(fine, max(image.shape[-2:]))), list(layers))
        return sum(float(style_loss(f_image[l], gram(f_fine[l]))) for l in layers) / len(layers)


def test_scale_mixing_that_climbs_ends_on_its_best_image(content_img):
    """The astronaut's texture on the rocket: projected L-BFGS climbed here from 2.7e8
    (peak 4.3e9) and stopped at 3.6e9, 34 times its best, the mixed style noise. The
    mixing runs Adam (``optimizer.MIX_LR``), keeps its best image, and the run uses, and
    returns, the best mixed style it saw."""
    from skimage import data

    from tests.support.tensors import small_picture

    fine, coarse = to_t(small_picture(data.astronaut(), 64)), to_t(small_picture(data.rocket(), 64))
    cfg = Config.from_options(size=48, mix_iterations=20, iterations=1, precision="fp32")
    seen = []
    result = Stylizer(cfg).run(to_t(content_img), [], fine_style=fine, coarse_style=coarse,
                               callback=lambda e: seen.append(e.total) if e.phase == "mix" else None)
    assert len(seen) == 20 and result.mixed_style is not None
    mixed = _mix_loss(result.mixed_style, fine, cfg)
    assert mixed <= min(seen) * 1.001, (mixed, min(seen), seen)
    assert mixed < seen[0] / 2  # and it did take on the fine texture


def test_cli_fine_and_coarse_style_without_other_styles(tmp_path, content_path, style_path, style_img2, capsys):
    coarse = tmp_path / "coarse.png"
    style_img2.save(coarse)
    out = tmp_path / "o.png"
    code = main([str(content_path), "--fine-style", str(style_path), "--coarse-style", str(coarse),
                 "-o", str(out), "--size", "32", "--iterations", "2", "--mix-iterations", "2", "-q"])
    assert code == 0, capsys.readouterr().err
    rec = json.loads((tmp_path / "o.png.json").read_text())
    assert rec["inputs"]["fine_style"] == str(style_path) and "fine_style" not in rec["config"]["scale"]
    assert rec["plan"]["mixed_styles"] is True and rec["iterations"] == 4
    # the style the run used is beside the output, and the record names it
    mixed = tmp_path / "o.png.mixed-style.png"
    assert rec["mixed_style"]["path"] == str(mixed) and mixed.is_file()
    assert list(Image.open(mixed).size) == rec["mixed_style"]["size"] == [32, 22]  # the coarse shape
    code = main([str(content_path), "-o", str(tmp_path / "x.png"), "--size", "32", "-q"])
    assert code == 2 and "no style image" in capsys.readouterr().err


def test_cli_scales_are_recorded(tmp_path, content_path, style_path, capsys):
    out = tmp_path / "o.png"
    code = main([str(content_path), str(style_path), "-o", str(out), "--scales", "32,48",
                 "--scale-iterations", "2,1", "--preserve-colors", "luminance", "-q"])
    assert code == 0, capsys.readouterr().err
    rec = json.loads((tmp_path / "o.png.json").read_text())
    assert rec["config"]["scale"]["scales"] == [32, 48] and rec["config"]["color"]["preserve_colors"] == "luminance"
    assert [p["iterations"] for p in rec["plan"]["scales"]] == [2, 1] and rec["output_size"][0] == 48


def test_api_takes_the_new_options(content_img, style_img, tmp_path):
    import nstyle
    from PIL import Image

    mask = tmp_path / "m.png"
    Image.new("L", (10, 10), 255).save(mask)
    img = nstyle.stylize(content_img, style_img, scales=[32, 40], scale_iterations=[1, 1],
                         style_masks=[str(mask)], keep_mask=str(mask), preserve_colors="swap")
    assert max(img.size) == 40
    with pytest.raises(nstyle.BadOption, match="2 style masks for 1 style"):
        nstyle.stylize(content_img, style_img, size=32, style_masks=[str(mask), str(mask)])


def test_a_scale_ends_once_the_image_settles_and_the_plan_says_so(content_img, style_img):
    from nstyle.core.optimizer import SETTLE_WINDOW

    def run(tolerance):
        cfg = Config.from_options(scales="32,48", scale_iterations="12", tolerance=tolerance)
        return Stylizer(cfg).run(to_t(content_img), [to_t(style_img)])

    settled = run(1e6)  # every change is "small": each scale stops after the window
    assert [p["iterations_run"] for p in settled.plan["scales"]] == [SETTLE_WINDOW, SETTLE_WINDOW]
    assert settled.iterations == 2 * SETTLE_WINDOW and not settled.stopped_early
    full = run(0)  # 0: every planned iteration runs
    assert [p["iterations_run"] for p in full.plan["scales"]] == [12, 12] and full.iterations == 24


def test_coarse_scales_keep_the_output_sizes_content_balance(content_img):
    """Content is a sum over positions and style (Grams / M) is not: a coarse scale's content
    term is multiplied by output positions / its positions, so the balance is the output's
    (balance_size 0: without the reference size's own factor, tests/core/test_balance.py)."""
    seen = {}

    def cb(event):
        seen.setdefault(event.scale, event.losses["content.relu4_2"])

    # every content layer at every scale (auto would leave relu4_2 out at the last)
    cfg = Config.from_options(scales="32,64", scale_iterations="1", style_weight=0, init="gray", balance_size=0,
                              coarse_only_layers="none")
    result = Stylizer(cfg).run(to_t(content_img), callback=cb)
    (h1, w1), (h2, w2) = [(p["height"], p["width"]) for p in result.plan["scales"]]
    plain = Stylizer(Config.from_options(size=32, iterations=1, style_weight=0, init="gray", balance_size=0)).run(
        to_t(content_img), callback=lambda e: seen.setdefault("plain", e.losses["content.relu4_2"]))
    assert plain.iterations == 1
    assert seen[1] == pytest.approx(seen["plain"] * (h2 * w2) / (h1 * w1), rel=1e-4)
