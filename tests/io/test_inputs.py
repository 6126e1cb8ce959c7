"""nstyle.io.inputs: the images of a run, apart from the knobs; filled from paths, PIL images
or arrays; loaded without paths by a server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import nstyle
from nstyle.cli.main import main
from nstyle.options.config import INITS, Config, iter_options

from nstyle.errors import BadImage, BadOption
from nstyle.io.inputs import Inputs
from nstyle.options.inputs import INPUT_FIELDS


def test_config_holds_no_input_files():
    names = {o.name for o in iter_options()}
    assert not names & {f.name for f in INPUT_FIELDS}
    with pytest.raises(BadOption, match="init must be one of content, noise, gray"):
        Config.from_options(init="/dev/zero")
    # a record from before the split still repeats (its input paths are ignored)
    old = Config().to_dict()
    old["regions"] = {"style_masks": ["m.png"], "keep_mask": None}
    old["image"]["init"] = "start.png"
    assert Config.from_dict(old) == Config()


def test_split_moves_files_and_an_init_image_out_of_the_options(content_img, style_img):
    mask = np.ones((8, 8), dtype=np.float32)
    inputs, knobs = Inputs.split(content_img, [style_img], {
        "size": 32, "style_masks": [mask], "keep_mask": "k.png", "init": style_img})
    assert knobs == {"size": 32}
    assert inputs.init_image is style_img and inputs.keep_mask == "k.png"
    assert inputs.describe() == {"content": "<PIL image 64x43>", "styles": ["<PIL image 64x56>"],
                                 "style_masks": ["<array 8x8>"], "keep_mask": "k.png",
                                 "init_image": "<PIL image 64x56>"}
    assert Inputs.split(content_img, [], {"init": "noise"})[1] == {"init": "noise"}


@pytest.mark.parametrize("inputs, options, message", [
    (dict(styles=["s.png"], style_masks=["a.png", "b.png"]), {}, "2 style masks for 1 style"),
    (dict(styles=[], fine_style="f.png"), {}, "go together"),
    (dict(styles=[]), {}, "no style image was given"),
    (dict(styles=["s.png"]), {"style_blend_weights": "1,2"}, "style_blend_weights has 2 weights for 1 style image: give one weight per style image"),
    (dict(styles=["s.png"], init_image="i.png"), {"init": "noise"}, "init is 'noise' but a starting image"),
])
def test_counts_and_combinations_are_checked_before_opening(inputs, options, message):
    with pytest.raises(BadOption, match=message):
        Inputs("missing.png", **inputs).load(Config.from_options(**options))


def test_a_server_loads_no_path(content_img, style_img):
    with pytest.raises(BadImage, match="keep_mask: a path was given where only an image is taken"):
        Inputs(content_img, [style_img], keep_mask="/dev/zero").load(Config(), allow_paths=False)
    loaded = Inputs(content_img, [style_img], style_masks=[None], keep_mask=Image.new("L", (4, 4), 255)
                    ).load(Config(), allow_paths=False)
    assert loaded.style_masks is None and loaded.keep_mask.shape == (1, 1, 4, 4)


def test_api_takes_arrays_and_pil_for_every_input(content_img, style_img):
    keep = np.zeros((43, 64), dtype=np.uint8)
    keep[:, :32] = 255
    result = nstyle.run(content_img, None, size=32, iterations=1, mix_iterations=1, keep_mask=keep,
                        fine_style=style_img, coarse_style=np.asarray(style_img), init_image=style_img)
    assert result.plan["mixed_styles"] is True and result.iterations == 2


def test_cli_init_path_and_init_image_flag(tmp_path, content_path, style_path, capsys):
    fast = ["--size", "32", "--iterations", "1", "-q"]
    out = tmp_path / "o.png"
    assert main([str(content_path), str(style_path), "-o", str(out), "--init", str(style_path), *fast]) == 0
    record = json.loads((tmp_path / "o.png.json").read_text())
    assert record["inputs"]["init_image"] == str(style_path) and record["config"]["image"]["init"] == "content"
    assert record["planned_iterations"] == 1 and record["history"]["iteration"] == [1]
    assert "argv0" not in record["platform"]
    code = main([str(content_path), str(style_path), "-o", str(out), "--init", "x.png",
                 "--init-image", "y.png", *fast])
    assert code == 2 and "give one of them" in capsys.readouterr().err
    code = main([str(content_path), str(style_path), "-o", str(out), "--init-image",
                 str(tmp_path / "nope.png"), *fast])
    err = capsys.readouterr().err
    assert code == 2 and "init image" in err and "does not exist" in err
