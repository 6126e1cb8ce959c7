import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from nstyle.cli.main import main
from nstyle.options.config import iter_options

FAST = ["--size", "32", "--iterations", "2", "-q"]


def run_cli(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_stylize_writes_image_and_run_record(tmp_path, content_path, style_path, capsys):
    out = tmp_path / "out.jpg"
    code, _, err = run_cli([content_path, style_path, "-o", out, "--size", "40", "--iterations", "3",
                            "--seed", "7", "--style-weight", "1e5"], capsys)
    assert code == 0, err
    with Image.open(out) as img:
        assert img.format == "JPEG" and max(img.size) == 40
    record = json.loads((tmp_path / "out.jpg.json").read_text())
    assert record["config"]["loss"]["style_weight"] == 1e5
    assert record["seed"] == 7 and record["iterations"] == 3
    assert record["device"] == "cpu"
    assert set(record["versions"]) >= {"nstyle", "torch", "numpy", "pillow", "python"}
    assert "style.relu1_1" in record["losses"] and "content.relu4_2" in record["losses"]
    assert record["timings"]["total"] > 0
    assert record["inputs"]["content"] == str(content_path)


def test_several_styles_with_blend_weights(tmp_path, content_path, style_path, style_img2, capsys):
    s2 = tmp_path / "s2.png"
    style_img2.save(s2)
    out = tmp_path / "out.png"
    code, _, err = run_cli([content_path, style_path, s2, "-o", out, "--style-blend-weights", "2,1",
                            *FAST], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "out.png.json").read_text())
    assert record["config"]["image"]["style_blend_weights"] == [2.0, 1.0]
    assert len(record["inputs"]["styles"]) == 2


def test_save_every_and_progression(tmp_path, content_path, style_path, capsys):
    out = tmp_path / "out.png"
    code, _, err = run_cli([content_path, style_path, "-o", out, "--size", "32", "--iterations", "4",
                            "--save-every", "2", "--progression", tmp_path / "prog.gif", "-q"], capsys)
    assert code == 0, err
    saved = sorted(p.name for p in (tmp_path / "out_iterations").iterdir())
    assert saved == ["iter_00002.png", "iter_00004.png"]
    with Image.open(tmp_path / "prog.gif") as gif:
        assert gif.n_frames == 3  # iterations 1, 2 and 4
        assert max(gif.size) == 32  # small frames are not blown up


def test_progression_strip_without_save_every(tmp_path, content_path, style_path, capsys):
    code, _, err = run_cli([content_path, style_path, "-o", tmp_path / "o.png", "--size", "32",
                            "--iterations", "20", "--progression", tmp_path / "strip.png", "-q"], capsys)
    assert code == 0, err
    with Image.open(tmp_path / "strip.png") as strip:
        assert strip.width > 5 * strip.height  # 1 + 10 frames side by side
    assert not (tmp_path / "o_iterations").exists()


def test_reconstruct_content_and_style(tmp_path, content_path, capsys):
    code, _, err = run_cli(["reconstruct", "content", content_path, "--layer", "relu2_1", "-o",
                            tmp_path / "c.png", *FAST], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "c.png.json").read_text())
    assert rec["config"]["loss"]["content_layers"] == ["relu2_1"]
    assert rec["config"]["loss"]["style_weight"] == 0 and rec["config"]["image"]["init"] == "noise"
    assert set(rec["losses"]) == {"content.relu2_1", "total"}
    code, _, err = run_cli(["reconstruct", "style", content_path, "--layers", "relu1_1,relu2_1", "-o",
                            tmp_path / "s.png", *FAST], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "s.png.json").read_text())
    assert set(rec["losses"]) == {"style.relu1_1", "style.relu2_1", "total"}


def test_layers_lists_names(capsys):
    code, out, _ = run_cli(["layers"], capsys)
    assert code == 0
    assert "relu4_2" in out and "pool5" not in out and len(out.splitlines()) == 36


def test_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in iter_options():
        assert "--" + opt.name.replace("_", "-") in text
    assert "(default: 512)" in text and "(default: relu4_2,relu3_1)" in text


def _bad_cases(tmp_path, content_path, style_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    trunc = tmp_path / "trunc.png"
    data = content_path.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.png"
    return {
        "missing content": [tmp_path / "nope.jpg", style_path, "-o", out],
        "missing style": [content_path, tmp_path / "nope.jpg", "-o", out],
        "empty file": [content_path, empty, "-o", out],
        "not an image": [text, style_path, "-o", out],
        "truncated": [trunc, style_path, "-o", out],
        "unknown layer": [content_path, style_path, "-o", out, "--style-layers", "relu1_1,relu9_9"],
        "negative weight": [content_path, style_path, "-o", out, "--style-weight", "-5"],
        "nan weight": [content_path, style_path, "-o", out, "--content-weight", "nan"],
        "inf weight": [content_path, style_path, "-o", out, "--tv-weight", "inf"],
        "zero iterations": [content_path, style_path, "-o", out, "--iterations", "0"],
        "size too small": [content_path, style_path, "-o", out, "--size", "4"],
        "size too large": [content_path, style_path, "-o", out, "--size", "99999"],
        "missing output folder": [content_path, style_path, "-o", tmp_path / "no" / "out.png"],
        "bad extension": [content_path, style_path, "-o", tmp_path / "out.bmp"],
        "unknown optimizer": [content_path, style_path, "-o", out, "--optimizer", "rmsprop"],
        "unknown flag": [content_path, style_path, "-o", out, "--styel-weight", "3"],
        "missing init image": [content_path, style_path, "-o", out, "--init", tmp_path / "nope.png"],
        "no output": [content_path, style_path],
        "bad layer weights": [content_path, style_path, "-o", out, "--style-layer-weights", "1,2"],
    }


@pytest.mark.parametrize("case", [
    "missing content", "missing style", "empty file", "not an image", "truncated", "unknown layer",
    "negative weight", "nan weight", "inf weight", "zero iterations", "size too small",
    "size too large", "missing output folder", "bad extension", "unknown optimizer", "unknown flag",
    "missing init image", "no output", "bad layer weights"])
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, content_path, style_path, capsys, case):
    argv = _bad_cases(tmp_path, content_path, style_path)[case]
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nstyle: error: "), err
    assert "Traceback" not in err
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out.png.json").exists()


def test_unwritable_output_folder(tmp_path, content_path, style_path, capsys, monkeypatch):
    import nstyle.io.images

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # as root every folder is writable, so simulate a read-only one
    monkeypatch.setattr(nstyle.io.images.os, "access",
                        lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    code, _, err = run_cli([content_path, style_path, "-o", locked / "o.png", *FAST], capsys)
    assert code == 2 and "not writable" in err
    assert list(locked.iterdir()) == []


def test_odd_image_modes_are_accepted(tmp_path, content_img, style_path, capsys):
    rgba = content_img.convert("RGBA")
    rgba.putalpha(128)
    variants = {"rgba.png": rgba, "pal.png": content_img.convert("P"), "gray.png": content_img.convert("L"),
                "cmyk.jpg": content_img.convert("CMYK")}
    for name, img in variants.items():
        p = tmp_path / name
        img.save(p)
        code, _, err = run_cli([p, style_path, "-o", tmp_path / f"out_{name}.png", "--size", "32",
                                "--iterations", "1", "-q"], capsys)
        assert code == 0, (name, err)


def test_non_finite_loss_exits_1_without_output(tmp_path, content_path, style_path, capsys, monkeypatch):
    from nstyle.core.losses import terms

    monkeypatch.setattr(terms, "total_variation", lambda x: x.sum() * float("nan"))
    code, _, err = run_cli([content_path, style_path, "-o", tmp_path / "out.png", *FAST,
                            "--tv-weight", "1e-3"], capsys)
    assert code == 1 and "loss became nan" in err
    assert not (tmp_path / "out.png").exists()


def test_diverging_run_keeps_the_last_good_image_when_saving(tmp_path, content_path, style_path,
                                                             capsys, monkeypatch):
    from nstyle.core.losses import terms

    real_tv = terms.total_variation
    calls = []

    def tv_that_breaks(x):  # finite for three evaluations, then NaN
        calls.append(1)
        return real_tv(x) * (float("nan") if len(calls) > 3 else 1.0)

    monkeypatch.setattr(terms, "total_variation", tv_that_breaks)
    code, _, err = run_cli([content_path, style_path, "-o", tmp_path / "out.png", "--size", "32",
                            "--iterations", "10", "--save-every", "100", "--tv-weight", "1e-3", "-q"], capsys)
    assert code == 1 and "last good image" in err and len(err.strip().splitlines()) == 1
    kept = list((tmp_path / "out_iterations").iterdir())
    assert [p.name for p in kept] == ["last_good_iter_00003.png"]
    assert not (tmp_path / "out.png").exists()


def test_console_script_runs_as_a_process(tmp_path, content_path, style_path):
    """The installed entry point, as a user runs it (not a TTY: no progress bar)."""
    proc = subprocess.run([sys.executable, "-m", "nstyle", str(content_path), str(style_path), "-o",
                           str(tmp_path / "o.webp"), "--size", "32", "--iterations", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o.webp").exists()
    assert "stylizing" not in proc.stderr  # quiet when not a terminal
    proc = subprocess.run([sys.executable, "-m", "nstyle", "missing.jpg", str(style_path), "-o",
                           str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_example_runs_with_its_own_defaults_and_user_flags_win(tmp_path, capsys):
    out = tmp_path / "ex.png"
    code, _, err = run_cli(["example", "-o", out, "--iterations", "2", "-q"], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "ex.png.json").read_text())
    assert record["config"]["image"]["size"] == 256  # the example's own default
    assert record["iterations"] == 2  # the user's flag
    with Image.open(out) as img:
        assert max(img.size) == 256
    code, _, err = run_cli(["example", "-o", out, "--iterations", "1", "--size", "32", "-q"], capsys)
    assert code == 0, err
    with Image.open(out) as img:
        assert max(img.size) == 32  # the user's flag wins over the example's size


def test_example_paints_with_the_shipped_painting():
    from nstyle.io.example import example_images

    content, style = example_images()
    assert style.size == (640, 400) and style.mode == "RGB"  # nstyle/data/starry_night.jpg
    r, g, b = np.asarray(style, dtype=float).reshape(-1, 3).mean(axis=0)
    assert b > r  # the night sky's blue, not a placeholder


def test_style_scale_help_says_larger_is_larger_strokes(capsys):
    """The style image is resized to style_scale x size and its strokes keep their size in
    its pixels: a larger style_scale paints larger strokes (Golden Gate x Starry Night at
    256 px: small swirls at 0.5, the sky in wide bands at 2); the help said the reverse."""
    with pytest.raises(SystemExit):
        main(["--help"])
    entries = re.split(r"\n  (?=-)", capsys.readouterr().out)
    entry = " ".join(next(e for e in entries if e.startswith("--style-scale")).split())
    assert "larger = larger brush strokes" in entry and "smaller = larger" not in entry


@pytest.mark.parametrize("command", [[], ["reconstruct", "content"], ["example"], ["explore", "units"],
                                     ["explore", "activations"], ["explore", "reconstruct"],
                                     ["sheet"], ["batch"], ["video"], ["serve"]])
def test_every_option_help_shows_one_default(command, capsys):
    """A command that sets its own default for an option (explore units: --lr 4) shows that
    one, not the option's general default as well."""
    with pytest.raises(SystemExit) as exc:
        main([*command, "--help"])
    assert exc.value.code == 0
    entries = re.split(r"\n  (?=-)", capsys.readouterr().out)
    twice = [" ".join(e.split())[:70] for e in entries if e.count("(default:") > 1]
    assert not twice, twice


# --------------------------------------------------------------------------- the first hour


def test_styles_lists_the_built_in_paintings(capsys):
    code, out, err = run_cli(["styles"], capsys)
    assert code == 0, err
    names = [line.split()[0] for line in out.splitlines() if line and not line.startswith("use ")]
    assert names[:2] == ["starry-night", "the-scream"] and len(names) >= 6
    assert "nstyle photo.jpg starry-night -o out.png" in out


def test_a_built_in_painting_by_name_positional_or_flag(tmp_path, content_path, capsys):
    out = tmp_path / "out.png"
    code, _, err = run_cli([content_path, "starry-night", "--style", "The_Scream", "-o", out, *FAST], capsys)
    assert code == 0, err
    styles = json.loads((tmp_path / "out.png.json").read_text())["inputs"]["styles"]
    assert [os.path.basename(s) for s in styles] == ["starry_night.jpg", "the_scream.jpg"]
    assert all(os.path.isfile(s) for s in styles)  # the installed files


def test_an_existing_file_wins_over_a_painting_of_the_same_name(tmp_path, content_path, style_img,
                                                               capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    style_img.save(tmp_path / "shipwreck", format="PNG")
    code, _, err = run_cli([content_path, "shipwreck", "-o", tmp_path / "o.png", *FAST], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "o.png.json").read_text())["inputs"]["styles"] == ["shipwreck"]


@pytest.mark.parametrize("argv, said", [
    (["servee"], "unknown command 'servee'; did you mean 'nstyle serve'?"),
    (["sever", "--port", "8765"], "unknown command 'sever'; did you mean 'nstyle serve'?"),
    (["exmaple", "-o", "x.png"], "did you mean 'nstyle example'?"),
    (["{content}", "starry-nite", "-o", "{out}"],
     "'starry-nite' is neither an image file nor a built-in painting (did you mean starry-night?); "
     "'nstyle styles' lists the paintings"),
    (["{content}", "{style}", "-o", "{out}", "--styel-weight", "3"],
     "unknown option --styel-weight (did you mean --style-weight?) (see 'nstyle --help')"),
    (["{content}", "{style}", "-o", "{out}", "--presrve-colors", "luminance"],
     "unknown option --presrve-colors (did you mean --preserve-colors?)"),
    (["example", "--sizes", "64"], "unknown option --sizes (did you mean --size?) (see 'nstyle example --help')"),
    (["{content}", "{style}:nomask.png", "-o", "{out}"],
     "mask of the style image 'nomask.png' does not exist"),
    (["{content}", "{style}", "-o", "{folder}"],
     "output '{folder}' is a folder; give the image's file name, such as '{folder}/out.png'"),
    (["{content}", "{style}", "-o", "{folder}/result"],
     "output '{folder}/result' has no file extension, so its format is unknown; end the name with one of"),
    (["{content}", "{style}", "-o", "{out}", "--style-blend-weights", "1,2"],
     "style_blend_weights has 2 weights for 1 style image: give one weight per style image, in order"),
])
def test_mistakes_are_answered_as_a_person_would(tmp_path, content_path, style_path, capsys, argv, said):
    names = {"content": content_path, "style": style_path, "out": tmp_path / "out.png", "folder": tmp_path}
    argv = [a.format(**names) for a in argv]
    said = said.format(**names)
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.count("\n") == 1 and said in err, err
    assert not (tmp_path / "out.png").exists()


def test_preserve_colours_is_the_same_option(tmp_path, content_path, style_path, capsys):
    code, _, err = run_cli([content_path, style_path, "-o", tmp_path / "o.png", "--preserve-colours",
                            "luminance", *FAST], capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "o.png.json").read_text())
    assert record["config"]["color"]["preserve_colors"] == "luminance"


def test_the_estimate_is_said_before_the_run_and_beside_its_time(tmp_path, content_path, style_path, capsys):
    from nstyle.core.estimate import MAX_SAMPLES
    from nstyle.io import speed
    from nstyle.options.config import Config

    out = tmp_path / "o.png"
    before = speed.known_speed(Config())
    code, _, err = run_cli([content_path, style_path, "-o", out, "--size", "48", "--iterations", "3"], capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    estimate_line = next(line for line in lines if "on this computer" in line)
    assert estimate_line.startswith("nstyle: 48x")
    assert ", 3 iterations: " in estimate_line and "(from its measured speed)" in estimate_line
    assert lines.index(estimate_line) < len(lines) - 1 and lines[-1].startswith(f"wrote {out} ")
    assert "(estimated " in lines[-1]
    # measured first if it never was here (two samples), and the run itself is one more; at
    # most MAX_SAMPLES are kept (the session's earlier runs may have filled the record)
    assert speed.known_speed(Config()).samples == min((before.samples if before else 2) + 1, MAX_SAMPLES)


def test_quiet_runs_say_no_estimate(tmp_path, content_path, style_path, capsys):
    code, _, err = run_cli([content_path, style_path, "-o", tmp_path / "o.png", *FAST], capsys)
    assert code == 0 and err == ""


@pytest.mark.parametrize("columns, shown", [(200, "total=1.23e+05 content=4.56e+04 style=7.8e+04"),
                                            (100, "total=1.23e+05"), (80, None)])
def test_the_progress_bar_keeps_twenty_columns_and_drops_the_losses_first(monkeypatch, columns, shown):
    import io

    from tqdm import tqdm

    import nstyle.cli.main as cli

    monkeypatch.setattr(cli, "_terminal_columns", lambda: columns)
    bar = tqdm(total=150, file=io.StringIO(), ncols=columns, desc="scale 2/2 (512px)")
    bar.start_t -= 60  # a minute in: a real rate (s/it) and times
    bar.update(45)
    cli.fit_postfix(bar, {"total": 1.23e5, "content.relu4_2": 4.56e4, "style.relu1_1": 7.8e4})
    line = bar.format_meter(**bar.format_dict)
    assert bar.postfix == (shown or "")
    inner = line[line.index("|") + 1: line.rindex("|")]
    assert len(inner) >= cli.MIN_BAR_COLUMNS, line
    bar.close()


def test_a_reader_that_goes_away_is_not_an_error():
    """`nstyle styles | head -1`: the pipe closes before the listing is written; the
    command ends quietly with the shell's SIGPIPE status, not an 'internal error'."""
    proc = subprocess.Popen([sys.executable, "-m", "nstyle", "styles"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the child has started writing
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and err == b"", err
