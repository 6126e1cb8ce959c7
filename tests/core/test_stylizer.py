import math

import pytest
import torch

from nstyle.core.losses import terms
from nstyle.options.config import Config
from nstyle.core.events import CancelToken
from nstyle.core.stylizer import Stylizer
from nstyle.core.image_tensors import resize_tensor
from nstyle.errors import BadOption, Cancelled, RunFailed
from tests.support.tensors import to_t


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1.0 / mse)


def test_content_reconstruction_from_relu1_1_is_close(content_img):
    cfg = Config.from_options(size=64, content_layers="relu1_1", style_weight=0, tv_weight=0,
                              init="noise", iterations=200, tolerance=0)
    content = to_t(content_img)
    result = Stylizer(cfg).run(content)
    assert psnr(result.image, resize_tensor(content, 64)) >= 25.0


def test_style_only_run_lowers_style_loss_100x(style_img):
    cfg = Config.from_options(size=64, content_weight=0, tv_weight=0, style_weight=1,
                              init="noise", iterations=100)
    first = {}

    def cb(event):
        if event.iteration == 1:
            first.update(event.losses)

    style = to_t(style_img)
    result = Stylizer(cfg).run(style, [style], callback=cb)
    style_terms = lambda d: sum(v for k, v in d.items() if k.startswith("style."))
    assert style_terms(first) / style_terms(result.losses) >= 100


def test_same_seed_gives_identical_output_and_other_seed_differs(content_img, style_img):
    opts = dict(size=48, init="noise", iterations=5)
    c, s = to_t(content_img), to_t(style_img)
    a = Stylizer(Config.from_options(seed=3, **opts)).run(c, [s]).image
    b = Stylizer(Config.from_options(seed=3, **opts)).run(c, [s]).image
    d = Stylizer(Config.from_options(seed=4, **opts)).run(c, [s]).image
    assert torch.equal(a, b)
    assert not torch.equal(a, d)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam", "adagrad", "sgd"])
def test_each_optimizer_lowers_the_total_loss(content_img, style_img, optimizer):
    cfg = Config.from_options(size=48, optimizer=optimizer, iterations=15)
    losses_seen = []
    Stylizer(cfg).run(to_t(content_img), [to_t(style_img)],
                      callback=lambda e: losses_seen.append(e.total))
    assert len(losses_seen) == 15
    assert losses_seen[-1] < 0.8 * losses_seen[0]


def test_output_has_the_requested_size_and_aspect(content_img, style_img):
    cfg = Config.from_options(size=40, iterations=1)
    result = Stylizer(cfg).run(to_t(content_img), [to_t(style_img)])
    h, w = content_img.height, content_img.width
    assert result.image.shape[-1] == 40 and result.image.shape[-2] == round(40 * h / w)
    assert 0.0 <= float(result.image.min()) and float(result.image.max()) <= 1.0


def test_callback_can_stop_early_and_gets_previews(content_img, style_img):
    events = []

    def cb(event):
        events.append(event)
        if event.iteration == 3:
            assert event.preview().size == (48, round(48 * content_img.height / content_img.width))
            assert event.eta >= 0
            event.stop()

    result = Stylizer(Config.from_options(size=48, iterations=50)).run(
        to_t(content_img), [to_t(style_img)], callback=cb)
    assert result.iterations == 3 and result.stopped_early
    assert set(events[0].losses) == {"content.relu4_2", "content.relu3_1", "style.relu1_1", "style.relu2_1",
                                     "style.relu3_1", "style.relu4_1", "style.relu5_1", "tv", "total"}


def test_cancel_token_aborts(content_img, style_img):
    token = CancelToken()

    def cb(event):
        if event.iteration == 2:
            token.cancel()

    with pytest.raises(Cancelled, match="after 2 of 50"):
        Stylizer(Config.from_options(size=48, iterations=50)).run(
            to_t(content_img), [to_t(style_img)], callback=cb, cancel=token)


def test_non_finite_loss_stops_with_a_clear_error(content_img, style_img, monkeypatch):
    monkeypatch.setattr(terms, "total_variation", lambda x: x.sum() * float("nan"))
    with pytest.raises(RunFailed, match="loss became nan"):
        Stylizer(Config.from_options(size=32, iterations=5, tv_weight=1e-3)).run(to_t(content_img), [to_t(style_img)])


def _unmasked_targets(stylizer, styles, size):
    """The Gram targets of the one region that unmasked styles make (what a run uses)."""
    regions = stylizer.network.style_regions(styles, [None] * len(styles), None, size, size, size)
    assert len(regions) == 1
    return regions[0].targets


def test_style_blend_weights_mix_the_targets(style_img, style_img2):
    a, b = to_t(style_img), to_t(style_img2)
    only_a = _unmasked_targets(Stylizer(Config.from_options(size=48)), [a], 48)
    only_b = _unmasked_targets(Stylizer(Config.from_options(size=48)), [b], 48)
    mixed = _unmasked_targets(Stylizer(Config.from_options(size=48, style_blend_weights="3,1")), [a, b], 48)
    for layer in only_a:
        assert torch.allclose(mixed[layer], 0.75 * only_a[layer] + 0.25 * only_b[layer], rtol=1e-4, atol=1e-3)
    equal = _unmasked_targets(Stylizer(Config.from_options(size=48)), [a, b], 48)
    assert torch.allclose(equal["relu1_1"], 0.5 * (only_a["relu1_1"] + only_b["relu1_1"]), rtol=1e-4, atol=1e-3)
    with pytest.raises(BadOption, match="2 style images"):
        _unmasked_targets(Stylizer(Config.from_options(size=48, style_blend_weights="1,1,1")), [a, b], 48)


def test_style_scale_changes_the_style_images_size(style_img):
    style = to_t(style_img)
    half = _unmasked_targets(Stylizer(Config.from_options(size=64, style_scale=0.5)), [style], 64)
    # the style image at half the 64 px scale is the style image at a 32 px scale
    at_32 = Stylizer(Config.from_options(size=32)).network.style_targets(style, 32)
    assert all(torch.equal(half[layer], at_32[layer]) for layer in at_32)
    full = Stylizer(Config.from_options(size=64)).network.style_targets(style, 64)
    assert not torch.allclose(half["relu1_1"], full["relu1_1"], rtol=0.05)


def test_init_modes(content_img, style_img):
    c = to_t(content_img)
    st = Stylizer(Config.from_options(size=32, init="gray"))
    from nstyle.core.vgg import preprocess
    bgr = preprocess(resize_tensor(c, 32))
    assert float(st.initial_image(bgr, None).abs().max()) == 0.0
    assert torch.equal(Stylizer(Config.from_options(size=32)).initial_image(bgr, None), bgr)
    noise = Stylizer(Config.from_options(size=32, init="noise")).initial_image(bgr, None)
    assert noise.shape == bgr.shape and float(noise.std()) > 50  # white noise over 0..255
    # a starting image is an input (nstyle.io.inputs), not an option: given, it wins
    given = Stylizer(Config.from_options(size=32)).initial_image(bgr, to_t(style_img))
    assert given.shape == bgr.shape and not torch.equal(given, bgr)
    with pytest.raises(BadOption, match="init must be one of"):
        Config.from_options(init="x.png")


def test_only_needed_layers_are_built():
    s = Stylizer(Config.from_options(content_layers="relu2_1", style_layers="relu1_1,relu3_1"))
    assert s.vgg.last_layer == "relu3_1"
    s = Stylizer(Config.from_options(style_weight=0))  # content only: up to relu4_2
    assert s.vgg.last_layer == "relu4_2"


def test_style_weight_without_styles_is_an_error(content_img):
    with pytest.raises(BadOption, match="no style image"):
        Stylizer(Config.from_options(size=32, iterations=1)).run(to_t(content_img), [])


def test_cuda_request_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(BadOption, match="no CUDA GPU"):
        Stylizer(Config.from_options(device="cuda"))


def test_precision_option_sets_the_loop_dtype_and_bf16_still_optimizes(content_img, style_img, monkeypatch):
    from nstyle.core import device

    fp32 = Stylizer(Config.from_options(size=48, precision="fp32"))
    assert fp32.precision == "fp32" and fp32.loop_vgg is fp32.vgg
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: False)
    assert Stylizer(Config.from_options(size=48, precision="auto")).precision == "fp32"
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: True)
    assert Stylizer(Config.from_options(size=48, precision="auto")).precision == "bf16"

    st = Stylizer(Config.from_options(size=48, precision="bf16", iterations=15))
    assert st.precision == "bf16"
    assert next(st.loop_vgg.parameters()).dtype == torch.bfloat16
    assert next(st.vgg.parameters()).dtype == torch.float32  # targets stay float32
    seen = []
    result = st.run(to_t(content_img), [to_t(style_img)], callback=lambda e: seen.append(e.total))
    assert result.image.dtype == torch.float32 and math.isfinite(result.losses["total"])
    assert result.precision == "bf16"  # what ran goes into the run record
    assert seen[-1] < 0.8 * seen[0]


def test_bf16_loss_is_close_to_fp32_loss(content_img, style_img):
    c, s = to_t(content_img), to_t(style_img)
    values = {}
    for precision in ("fp32", "bf16"):
        st = Stylizer(Config.from_options(size=64, precision=precision, init="noise", iterations=1))
        values[precision] = st.run(c, [s]).losses["total"]
    assert values["bf16"] == pytest.approx(values["fp32"], rel=0.05)


def test_the_image_stays_in_the_valid_pixel_range_while_optimizing(content_img, style_img):
    """The iterate is projected onto 0..255 after every step (not only clamped at the end)."""
    worst = []

    def cb(event):
        rgb = event.image  # as optimized: not clamped for the event
        worst.append(max(float(-rgb.min()), float(rgb.max() - 1.0)))

    Stylizer(Config.from_options(size=48, iterations=10, style_weight=1e6)).run(
        to_t(content_img), [to_t(style_img)], callback=cb)
    assert max(worst) <= 1e-5


def test_style_targets_are_computed_once_per_style_and_size(style_img, style_img2):
    st = Stylizer(Config.from_options(size=32))
    first = st.network.style_targets(to_t(style_img), 32)
    assert st.network.style_targets(to_t(style_img), 32) is first  # the same pixels, a new tensor
    assert st.network.style_targets(to_t(style_img), 48) is not first
    other = st.network.style_targets(to_t(style_img2), 32)
    assert not torch.allclose(other["relu1_1"], first["relu1_1"])
