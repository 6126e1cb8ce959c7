"""--coarse-only-layers: style or content layers left out at the last scale of a coarse-to-fine run."""

import pytest

from nstyle.core.objective import for_scale, left_out_at_last_scale
from nstyle.core.stylizer import Stylizer
from nstyle.core.targets import TargetMaker
from nstyle.errors import BadOption
from nstyle.options.config import Config
from tests.support.tensors import to_t


@pytest.mark.parametrize("layers, message", [
    (("relu4_3",), "not one of the style or content layers"),
    (("relu9_9",), "coarse-only layer"),
    (("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), "every style layer"),
])
def test_bad_coarse_only_layers_are_refused(layers, message):
    with pytest.raises(BadOption, match=message):
        Config.from_options(coarse_only_layers=layers)


def left_out(**options):
    return left_out_at_last_scale(Config.from_options(**options).loss)


def test_by_default_the_last_scale_reads_nothing_deeper_than_relu3_1():
    """Judged: relu4_1, relu4_2 and relu5_1 left out at 512 px, the photo held there by
    relu3_1 at a tenth of relu4_2's weight, preferred in 5 of 6 over every layer."""
    loss = Config().loss
    assert loss.coarse_only_layers is None  # auto
    assert set(left_out()) == {"relu4_1", "relu4_2", "relu5_1"}
    assert loss.layer_weights("content") == {"relu4_2": 1.0, "relu3_1": 0.1}
    assert left_out(coarse_only_layers="auto") == left_out()


def test_auto_leaves_nothing_out_where_the_last_scale_would_lose_its_content_or_style():
    assert left_out(content_layers="relu4_2") == ()  # no content left (judged softer)
    assert left_out(style_layers="relu4_1,relu5_1") == ()
    assert left_out(style_loss="neighbors") == ()  # matches every layer at once
    assert set(left_out(content_layers="relu2_2")) == {"relu4_1", "relu5_1"}
    assert set(left_out(content_weight=0, content_layers="relu4_2")) == {"relu4_1", "relu4_2", "relu5_1"}


def test_named_layers_or_none_replace_auto():
    assert left_out(coarse_only_layers="none") == ()
    assert left_out(coarse_only_layers="relu4_1") == ("relu4_1",)
    assert Config.from_options(coarse_only_layers="none").loss.coarse_only_layers == ()


def test_content_layers_other_than_the_defaults_weigh_equally():
    loss = Config.from_options(content_layers="relu4_2").loss
    assert loss.layer_weights("content") == {"relu4_2": 1.0}
    loss = Config.from_options(content_layers="relu3_1,relu4_2").loss  # not the default's order
    assert loss.layer_weights("content") == {"relu3_1": 0.5, "relu4_2": 0.5}


def test_the_last_of_several_scales_leaves_the_layer_out_and_keeps_the_others_weights():
    loss = Config.from_options(coarse_only_layers=("relu5_1",)).loss
    targets = {"relu4_2": None, "relu3_1": None}
    every = {t.layer: t.weight for t in for_scale(loss, targets, ()).style}
    last = {t.layer: t.weight for t in for_scale(loss, targets, (), left_out=left_out_at_last_scale(loss)).style}
    assert "relu5_1" in every and "relu5_1" not in last
    assert last == {layer: w for layer, w in every.items() if layer != "relu5_1"}


def test_a_content_layer_left_out_leaves_the_last_scale_without_that_content_term():
    """(relu3_1, the default's second content layer, still holds the photo there.)"""
    loss = Config.from_options(coarse_only_layers=("relu4_1", "relu4_2", "relu5_1")).loss
    every = for_scale(loss, {"relu4_2": None, "relu3_1": None}, ())
    last = for_scale(loss, {"relu3_1": None}, (), left_out=left_out_at_last_scale(loss))
    assert [t.layer for t in every.content] == ["relu4_2", "relu3_1"]
    assert [t.layer for t in last.content] == ["relu3_1"]
    assert {t.layer for t in last.style} == {"relu1_1", "relu2_1", "relu3_1"}


def run_and_watch(monkeypatch, content_img, style_img, **options):
    """(size, style terms reported, layers the network was asked for) per iteration."""
    asked: list[tuple[str, ...]] = []
    features = TargetMaker.features

    def spy(self, image_bgr, layers, loop=False):
        if loop:
            asked.append(tuple(layers))
        return features(self, image_bgr, layers, loop)

    monkeypatch.setattr(TargetMaker, "features", spy)
    seen = []
    options.setdefault("coarse_only_layers", ("relu5_1",))
    config = Config.from_options(size=48, iterations=2, precision="fp32", device="cpu", **options)
    Stylizer(config).run(to_t(content_img), [to_t(style_img)], callback=lambda p: seen.append(
        (p.size, sorted(k for k in p.losses if k.startswith("style.")))))
    return seen, asked


def test_a_coarse_to_fine_run_reads_the_layer_at_the_coarse_scale_only(monkeypatch, content_img, style_img):
    seen, asked = run_and_watch(monkeypatch, content_img, style_img, scales=(32, 48),
                                scale_iterations=(2, 2))
    coarse = [terms for size, terms in seen if size == 32]
    last = [terms for size, terms in seen if size == 48]
    assert coarse and all("style.relu5_1" in terms for terms in coarse)
    assert last and all("style.relu5_1" not in terms and "style.relu4_1" in terms for terms in last)
    # the network itself stops earlier at the last scale: relu5_1 is never computed there
    assert any("relu5_1" in layers for layers in asked)
    assert "relu5_1" not in asked[-1] and "relu4_2" in asked[-1]


def test_with_the_deep_layers_and_the_content_left_out_the_last_scale_stops_at_relu3_1(
        monkeypatch, content_img, style_img):
    """The default (auto): the photo's structure is laid out by the coarse scale and held
    at the last by relu3_1, so neither its targets nor its iterations run the network past
    relu3_1."""
    seen, asked = run_and_watch(monkeypatch, content_img, style_img, scales=(32, 48),
                                scale_iterations=(2, 2), coarse_only_layers=None)
    assert seen and all("style.relu4_1" in terms for size, terms in seen if size == 32)
    assert all(terms == ["style.relu1_1", "style.relu2_1", "style.relu3_1"]
               for size, terms in seen if size == 48)
    assert {"relu4_2", "relu5_1"} <= set(asked[0])  # the coarse scale reads every layer
    assert set(asked[-1]) == {"relu1_1", "relu2_1", "relu3_1"}


def test_a_run_of_one_scale_keeps_every_layer(monkeypatch, content_img, style_img):
    seen, _ = run_and_watch(monkeypatch, content_img, style_img, scales=(48,))
    assert seen and all("style.relu5_1" in terms for _, terms in seen)


def test_a_loss_that_matches_every_layer_at_once_keeps_them_all(monkeypatch, content_img, style_img):
    """neighbors' targets are hypercolumns over every style layer: the default leaves none
    out there, and asking for it is refused before any work."""
    seen = []
    config = Config.from_options(size=48, scales=(32, 48), scale_iterations=(2, 2), precision="fp32",
                                 device="cpu", style_loss="neighbors")
    Stylizer(config).run(to_t(content_img), [to_t(style_img)], callback=lambda p: seen.append(p.size))
    assert seen.count(48) == 2
    with pytest.raises(BadOption, match="coarse_only_layers cannot be used with style_loss neighbors"):
        Stylizer(Config.from_options(config, coarse_only_layers="relu5_1")).plan(to_t(content_img),
                                                                               [to_t(style_img)])


@pytest.mark.parametrize("coarse_only, deep_layer, later_reads_relu5_1",
                         [("relu5_1", False, False), ("", False, False), ("", True, True),
                          ("relu5_1", True, False)])
def test_a_videos_later_frames_refine_a_settled_start_without_the_coarse_only_layers(
        monkeypatch, style_img, coarse_only, deep_layer, later_reads_relu5_1):
    """A later frame starts from the previous one warped: its one scale counts as the last
    of several, so the coarse-only layers are left out there (the first frame keeps them),
    and so is relu5_1 unless deep_layer_in_later_frames (the run's coarse-only layers stay
    out either way)."""
    pytest.importorskip("cv2", reason="the video extra is not installed")
    from nstyle.tasks.video import VideoOptions, VideoStylizer
    from tests.support.clips import panned, texture

    asked: list[tuple[TargetMaker, tuple[str, ...]]] = []
    features = TargetMaker.features

    def spy(self, image_bgr, layers, loop=False):
        if loop:
            asked.append((self, tuple(layers)))
        return features(self, image_bgr, layers, loop)

    monkeypatch.setattr(TargetMaker, "features", spy)
    config = Config.from_options(size=48, iterations=2, precision="fp32", device="cpu",
                                 coarse_only_layers=coarse_only)
    stylizer = VideoStylizer(config, [to_t(style_img)],
                             VideoOptions(frame_iterations=2, deep_layer_in_later_frames=deep_layer))
    frames = list(stylizer.frames(panned(texture(96, 48), 2, 2)))
    assert len(frames) == 2
    first = [layers for network, layers in asked if network is stylizer.first.network]
    later = [layers for network, layers in asked if network is stylizer.later.network]
    assert first and all("relu5_1" in layers for layers in first)
    assert later and all(("relu5_1" in layers) == later_reads_relu5_1 for layers in later)
