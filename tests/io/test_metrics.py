"""The image-quality proxies on tiny made-up images, and the default run's borders."""

import numpy as np
import pytest

from nstyle.io import metrics
from nstyle.options.config import Config
from nstyle.core.stylizer import Stylizer
from tests.support.tensors import to_t


def _smooth(h: int = 48, w: int = 64) -> np.ndarray:
    """A soft colour gradient: what a clean sky looks like."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([0.3 + 0.4 * x, 0.4 + 0.3 * y, 0.7 - 0.2 * x], axis=-1)


def _speckled(seed: int = 0) -> np.ndarray:
    """The same gradient with per-pixel rainbow (chroma) noise of constant luminance."""
    rng = np.random.default_rng(seed)
    img = _smooth()
    noise = rng.normal(0, 0.08, img.shape[:2] + (3,))
    noise -= noise.mean(axis=-1, keepdims=True)  # chroma only: the channels' mean stays put
    return np.clip(img + noise, 0, 1)


def test_speckle_scores_far_worse_than_a_smooth_image():
    smooth, speckled = _smooth(), _speckled()
    assert metrics.chroma_detail_energy(speckled) > 50 * metrics.chroma_detail_energy(smooth)
    # relative to a painting: the speckled image is well above the smooth one
    style = _speckled(seed=1) * 0.5 + _smooth() * 0.5
    assert metrics.chroma_speckle(speckled, style) > 2 * metrics.chroma_speckle(smooth, style)


def test_uint8_and_pil_inputs_agree_with_floats():
    from PIL import Image

    img = (_speckled() * 255).round().astype(np.uint8)
    a = metrics.chroma_detail_energy(img)
    assert metrics.chroma_detail_energy(Image.fromarray(img)) == pytest.approx(a)
    with pytest.raises(ValueError, match="RGB image of shape"):
        metrics.chroma_detail_energy(np.zeros((8, 8)))


def test_edge_band_measures_a_noisy_border_and_a_pale_strip():
    rng = np.random.default_rng(0)
    clean = _smooth() + rng.normal(0, 0.02, (48, 64, 3))  # the same fine grain everywhere
    bands = metrics.edge_bands(clean)
    assert 0.7 < bands["detail_ratio"] < 1.4 and bands["luma_step"] < 0.02
    noisy = clean.copy()
    noisy[-2:] += rng.normal(0, 0.15, (2, 64, 3))  # a noisy band along the bottom edge
    assert metrics.edge_bands(noisy)["detail_ratio"] > 5
    pale = clean.copy()
    pale[:, :2] = 0.95  # a pale strip along the left edge
    assert metrics.edge_bands(pale)["luma_step"] > 0.2
    with pytest.raises(ValueError, match="too small"):
        metrics.edge_bands(np.zeros((8, 8, 3)), width=2)


def test_default_settings_paint_no_edge_band(content_img, style_img):
    """With the defaults the border carries about the interior's fine detail (neither a
    noisy band nor a smeared one) and no pale or dark strip."""
    result = Stylizer(Config.from_options(size=64, iterations=30)).run(to_t(content_img), [to_t(style_img)])
    bands = metrics.edge_bands(result.image[0].permute(1, 2, 0).numpy())
    assert 0.3 < bands["detail_ratio"] < 1.5 and bands["luma_step"] < 0.1, bands


def test_structure_kept_compares_at_one_size():
    from skimage import data

    from PIL import Image

    from nstyle.io.metrics import structure_kept

    photo = Image.fromarray(data.chelsea())
    assert structure_kept(photo, photo, 64) == pytest.approx(1.0)
    # the photo at another size is still the photo
    assert structure_kept(photo.resize((150, 100)), photo, 64) > 0.9
    noise = np.random.default_rng(0).random((100, 150, 3))
    assert structure_kept(noise, photo, 64) < 0.2
