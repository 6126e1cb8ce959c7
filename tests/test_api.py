import numpy as np
import pytest
from PIL import Image

import nstyle


def test_stylize_accepts_paths_pil_and_arrays(content_path, style_img):
    img = nstyle.stylize(str(content_path), np.asarray(style_img), size=32, iterations=2)
    assert isinstance(img, Image.Image) and img.mode == "RGB" and max(img.size) == 32
    img2 = nstyle.stylize(Image.open(content_path), [style_img, style_img], size=32, iterations=2,
                          style_blend_weights=[1, 2])
    assert max(img2.size) == 32


def test_run_returns_losses_and_the_callback_can_stop(content_img, style_img):
    seen = []

    def cb(event):
        seen.append(event.iteration)
        if event.iteration == 2:
            event.stop()

    result = nstyle.run(content_img, style_img, size=32, iterations=10, callback=cb)
    assert seen == [1, 2] and result.stopped_early and result.iterations == 2
    assert result.losses["total"] > 0


def test_config_object_and_options_combine(content_img, style_img):
    base = nstyle.Config.from_options(size=32, iterations=1)
    result = nstyle.run(content_img, style_img, base, optimizer="adam")
    assert result.iterations == 1


def test_init_image_path(tmp_path, content_img, style_img):
    p = tmp_path / "init.png"
    style_img.save(p)
    img = nstyle.stylize(content_img, style_img, size=32, iterations=1, init=str(p))
    assert max(img.size) == 32
    with pytest.raises(nstyle.BadImage, match="init image"):
        nstyle.stylize(content_img, style_img, size=32, iterations=1, init=str(tmp_path / "none.png"))


def test_unknown_option_is_a_bad_option(content_img, style_img):
    with pytest.raises(nstyle.BadOption, match="did you mean iterations"):
        nstyle.stylize(content_img, style_img, iteration=3)
