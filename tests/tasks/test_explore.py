"""nstyle.tasks.explore and 'nstyle explore': units, activations, the paper's reconstruction grid."""

import json

import numpy as np
import pytest
from PIL import Image

from nstyle.tasks import explore
from nstyle.cli.main import main
from nstyle.errors import BadOption


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_activation_maximisation_raises_the_channel_well_above_noise():
    fig = explore.units("relu2_1", "3,10", size=48, iterations=32, lr=8.0, seed=1)
    for entry in fig.record["mean_activation"]:
        noise, synthesized = entry["noise"], entry["synthesized"]
        # on noise a unit is barely on; the synthesized image drives it several times higher
        assert synthesized > 3 * max(noise, 1.0), entry
    assert fig.record["layout"]["cells"] == [["relu2_1 ch 3", "relu2_1 ch 10"]]
    assert fig.record["channels"] == [3, 10]


def test_maximise_excites_only_its_own_channel_most():
    # each image of the batch is made for its own channel: it beats the other's image there
    net, _ = explore.network_for("relu1_2", explore.Config.from_options(pooling="max"))
    x = explore.maximise(net, "relu1_2", [5, 20], 32, 16)
    on_own = explore.channel_means(net, "relu1_2", x, [5, 20])
    swapped = explore.channel_means(net, "relu1_2", x.flip(0), [5, 20])
    assert on_own[0] > swapped[0] and on_own[1] > swapped[1]


def test_activations_figure_orders_channels_and_keeps_patches_inside(content_img):
    fig = explore.activations(content_img, "relu2_1", top=5, patch_channels=2, patches=3, size=64)
    means = [c["mean"] for c in fig.record["channels"]]
    assert len(means) == 5 and means == sorted(means, reverse=True)
    w, h = content_img.size
    scale = 64 / max(w, h)
    for entry in fig.record["patches"]:
        assert 1 <= len(entry["boxes"]) <= 3
        for left, top, right, bottom in entry["boxes"]:
            assert 0 <= left < right <= round(w * scale) and 0 <= top < bottom <= round(h * scale)
    assert [c["channel"] for c in fig.record["patches"]] == [c["channel"] for c in fig.record["channels"][:2]]


def test_heat_colours_run_dark_to_light():
    colours = explore.heat_colours(np.linspace(0, 1, 5)).astype(int)
    assert colours.shape == (5, 3)
    brightness = colours.sum(axis=1)
    assert brightness[0] < 20 and brightness[-1] > 600 and np.all(np.diff(brightness) > 0)


def test_reconstruction_grid_has_the_papers_layout(tmp_path, content_img, style_img, capsys):
    content, style = tmp_path / "photo.png", tmp_path / "painting.png"
    content_img.save(content)
    style_img.save(style)
    out = tmp_path / "fig.png"
    code, _, err = run_cli(["explore", "reconstruct", content, "--style", style, "--layers",
                            "conv1_1,conv2_1,conv3_1", "--size", "32", "--iterations", "2", "-q",
                            "-o", out], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "fig.png.json").read_text())
    assert record["layout"]["rows"] == ["content", "style"]
    assert record["layout"]["cells"] == [["input", "conv1_1", "conv2_1", "conv3_1"],
                                         ["input", "conv1_1", "conv1_1-conv2_1", "conv1_1-conv3_1"]]
    assert [(r["mode"], r["layers"]) for r in record["runs"]] == [
        ("content", ["conv1_1"]), ("content", ["conv2_1"]), ("content", ["conv3_1"]),
        ("style", ["conv1_1"]), ("style", ["conv1_1", "conv2_1"]),
        ("style", ["conv1_1", "conv2_1", "conv3_1"])]
    # each cell is a one-term run: the content row has no style term and vice versa
    assert set(record["runs"][1]["losses"]) == {"content.conv2_1", "total"}
    assert set(record["runs"][5]["losses"]) == {"style.conv1_1", "style.conv2_1", "style.conv3_1", "total"}
    assert record["config"]["model"]["pooling"] == "avg"  # the paper's choice for this figure
    assert record["command"][:2] == ["nstyle", "explore"]
    with Image.open(out) as img:
        width, height = img.size
    cell = 64  # the smallest cell: 4 columns and 2 rows of them, plus labels
    assert 4 * cell < width < 6 * cell and 2 * cell < height < 3.5 * cell


def test_units_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "units.png"
    code, _, err = run_cli(["explore", "units", "--layer", "relu1_1", "--channels", "0-1",
                            "--size", "32", "--iterations", "3", "-q", "-o", out], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "units.png.json").read_text())
    assert record["kind"] == "explore.units" and record["channels"] == [0, 1]
    assert Image.open(out).size == tuple(record["output_size"])


@pytest.mark.parametrize("argv, message", [
    (["units", "--layer", "relu9_1"], "unknown layer 'relu9_1'"),
    (["units", "--layer", "relu1_1", "--channels", "64"], "channel 64 is out of range"),
    (["units", "--layer", "relu1_1", "--channels", "5-2"], "runs backwards"),
    (["units", "--layer", "relu1_1", "--channels", "x"], "is not a channel"),
    (["units", "--layer", "relu3_1", "--channels", "0-99"], "at most 64"),
    (["activations", "{img}", "--layer", "relu2_1", "--top", "0"], "top must be"),
    (["activations", "{missing}", "--layer", "relu2_1"], "does not exist"),
    (["reconstruct", "{img}", "--layers", "conv1_1,conv7_1"], "unknown layer 'conv7_1'"),
])
def test_bad_explore_input_is_one_line_and_exit_2(tmp_path, content_path, capsys, argv, message):
    out = tmp_path / "out.png"
    argv = [a.format(img=content_path, missing=tmp_path / "nope.png") for a in argv]
    code, _, err = run_cli(["explore", *argv, "-q", "-o", out], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "out.png.json").exists()


def test_parse_channels():
    assert explore.parse_channels("0-3,7, 2", "relu1_1") == [0, 1, 2, 3, 7]
    assert explore.parse_channels(range(4), "relu2_1") == [0, 1, 2, 3]
    with pytest.raises(BadOption, match="relu1_1 has channels 0..63"):
        explore.parse_channels([-1], "relu1_1")
