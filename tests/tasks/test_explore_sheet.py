"""nstyle.tasks.sheet and 'nstyle sheet': the contact sheet of styles x style weights."""

import json

import pytest
from PIL import Image

from nstyle.tasks import sheet
from nstyle.cli.main import main
from nstyle.errors import BadOption, RunFailed


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def style2_path(tmp_path, style_img2):
    p = tmp_path / "coffee.png"
    style_img2.save(p)
    return p


def test_sheet_of_two_styles_by_two_weights(tmp_path, content_path, style_path, style2_path, capsys):
    out = tmp_path / "sheet.png"
    code, _, err = run_cli(["sheet", content_path, "--style", style_path, "--style", style2_path,
                            "--style-weights", "1e3,1e5", "--size", "64", "--iterations", "3",
                            "-q", "-o", out], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "sheet.png.json").read_text())
    assert record["kind"] == "contact_sheet" and record["failed"] == 0
    assert record["rows"] == ["style", "coffee"] and record["style_weights"] == [1e3, 1e5]
    cells = {(c["row"], c["column"]): c for c in record["cells"]}
    assert sorted(cells) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(c["iterations"] >= 1 and c["losses"]["total"] > 0 for c in cells.values())
    assert record["config"]["image"]["size"] == 64
    # each style's targets are computed once (first column) and reused by the other column
    assert record["style_targets"] == {"computed": 2, "reused": 2}
    with Image.open(out) as img:
        # a photo row and two style rows of 64 px cells; an input column and two weights
        assert 3 * 64 < img.width < 5 * 64 and 3 * 64 < img.height < 5 * 64


def test_columns_trade_content_for_style_as_the_big_run_would(content_img, style_img):
    import nstyle

    fig = nstyle.contact_sheet(content_img, [style_img], [1e3, 1e6], size=32, iterations=8,
                               tolerance=0.0, for_size=512)
    light, heavy = fig.record["cells"]
    w, h = content_img.size  # the content weight carries a 512 px run's pixels (as its
    assert fig.record["content_weight_factor"] == pytest.approx(  # coarse scales do)
        (512 * round(512 * h / w)) / (32 * round(32 * h / w)), rel=1e-3)

    def style(cell):
        return sum(v for k, v in cell["losses"].items() if k.startswith("style.")) / cell["style_weight"]

    # the heavier weight gives up content to match the style better: the columns differ
    assert heavy["losses"]["content.relu4_2"] > 1.1 * light["losses"]["content.relu4_2"]
    assert style(heavy) < 0.85 * style(light)


def test_a_failed_cell_is_marked_and_the_rest_is_kept(tmp_path, content_path, style_path, capsys,
                                                      monkeypatch):
    real_run = sheet.Stylizer.run

    def diverge_at_heavy_weight(self, *args, **kwargs):
        if self.config.loss.style_weight == 1e6:
            raise RunFailed("the loss became nan at iteration 1")
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(sheet.Stylizer, "run", diverge_at_heavy_weight)
    out = tmp_path / "sheet.png"
    code, _, err = run_cli(["sheet", content_path, "--style", style_path, "--style-weights",
                            "1e4,1e6", "--size", "32", "--iterations", "2", "-q", "-o", out], capsys)
    assert code == 1 and "1 of 2 cells failed" in err and len(err.strip().splitlines()) == 1
    record = json.loads((tmp_path / "sheet.png.json").read_text())
    assert record["failed"] == 1 and "loss became nan" in record["cells"][1]["error"]
    assert out.exists()


@pytest.mark.parametrize("weights, message", [
    ("1e4,abc", "'abc' is not a number"), ("1e4,-1", "finite numbers > 0"), (",", "empty"),
    ("1e4,inf", "finite numbers > 0"), ("1e4,1e4", "repeat"), ("1,2,3,4,5,6,7,8,9", "at most 8"),
])
def test_bad_weights_list_is_one_line_and_exit_2(tmp_path, content_path, style_path, capsys,
                                                 weights, message):
    out = tmp_path / "sheet.png"
    code, _, err = run_cli(["sheet", content_path, "--style", style_path, "--style-weights",
                            weights, "-q", "-o", out], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_other_bad_sheet_input(tmp_path, content_path, style_path, capsys):
    out = tmp_path / "sheet.png"
    code, _, err = run_cli(["sheet", content_path, "--style", tmp_path / "nope.jpg", "-q", "-o", out], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(["sheet", content_path, "-q", "-o", out], capsys)
    assert code == 2 and "--style" in err
    with pytest.raises(BadOption, match="style_weight cannot be set"):
        sheet.contact_sheet(content_path, [style_path], [1e4], style_weight=1e5)
    assert not out.exists()


def test_fmt_weight():
    assert [sheet.fmt_weight(w) for w in (1e4, 1e5, 2.5e6, 10.0, 0.5, 1e-3)] == \
        ["1e4", "1e5", "2.5e6", "10", "0.5", "1e-3"]
