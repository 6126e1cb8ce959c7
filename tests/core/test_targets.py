"""Style targets: what of a style image the loss is made from (--style-margin)."""

import pytest
import torch

from nstyle.core.image_tensors import crop_border, resize_tensor
from nstyle.core.stylizer import Stylizer
from nstyle.core.vgg import preprocess
from nstyle.errors import BadOption
from nstyle.options.config import MAX_STYLE_MARGIN, Config
from tests.support.tensors import to_t


def test_crop_border_leaves_out_that_fraction_at_every_side():
    image = torch.arange(20 * 50, dtype=torch.float32).reshape(1, 1, 20, 50)
    cropped = crop_border(image, 0.1)
    assert cropped.shape[-2:] == (16, 40)
    assert torch.equal(cropped, image[..., 2:18, 5:45])
    assert crop_border(image, 0.0) is image
    assert crop_border(image[..., :3, :3], 0.4).shape[-2:] == (1, 1)  # never empty


def test_a_painted_border_strip_is_left_out_of_the_style():
    """A style image with a red strip down its right edge (as a scan's canvas edge): with
    --style-margin past the strip, its targets are those of the image without the strip,
    so the strip's colour cannot come back along the output's edges."""
    base = torch.rand(1, 3, 60, 80, generator=torch.Generator().manual_seed(0))
    striped = base.clone()
    striped[..., :, -4:] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    config = Config.from_options(size=40, style_margin=0.1, precision="fp32", device="cpu")
    network = Stylizer(config).network
    with_margin = network.style_targets(striped, 40)
    # the same image, cropped by hand after the resize the run makes, with no margin
    by_hand = Stylizer(Config.from_options(size=40, precision="fp32", device="cpu")).network
    resized = resize_tensor(striped, 40)
    expected = by_hand.targets(preprocess(crop_border(resized, 0.1)), list(by_hand.style_weights), 0,
                               by_hand.style_loss)
    for layer, target in with_margin.items():
        torch.testing.assert_close(target, expected[layer])
    plain = network.style_targets(base, 40)
    whole = Stylizer(Config.from_options(size=40, precision="fp32", device="cpu")).network.style_targets(striped, 40)
    # the strip changes the whole image's colour statistics, and the margin takes it out
    gap_whole = (whole["relu1_1"] - plain["relu1_1"]).abs().sum()
    gap_margin = (with_margin["relu1_1"] - plain["relu1_1"]).abs().sum()
    assert gap_margin < 0.2 * gap_whole


@pytest.mark.parametrize("bad", [-0.01, MAX_STYLE_MARGIN + 0.01, float("nan"), True])
def test_style_margin_is_a_fraction_in_range(bad):
    with pytest.raises(BadOption, match="style_margin"):
        Config.from_options(style_margin=bad)


def test_a_run_with_a_style_margin_runs(content_img, style_img):
    result = Stylizer(Config.from_options(size=32, iterations=2, style_margin=0.05, device="cpu")).run(
        to_t(content_img), [to_t(style_img)])
    assert result.image.shape[-1] == 32
