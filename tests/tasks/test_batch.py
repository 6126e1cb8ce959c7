"""nstyle batch on the local pool: outputs, summary, exit code, reruns, a kill, shared targets."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.support.tensors import to_t
from nstyle.tasks import batch
from nstyle.exec.pool import LocalPool, run_batch
from nstyle.tasks.batch import DONE, FAILED, PairOutcome, PairTask
from nstyle.cli.main import main
from nstyle.options.config import Config
from nstyle.core.targets import StyleTargets
from nstyle.core.stylizer import Stylizer

TINY = ["--size", "32", "--iterations", "3", "-q"]


@pytest.fixture
def photos(tmp_path, content_img, style_img2) -> Path:
    """Two photos and a broken one (a JPEG cut short) in a folder, plus a text file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    content_img.save(folder / "cat.png")
    style_img2.resize((48, 32)).save(folder / "coffee.jpg")
    (folder / "broken.jpg").write_bytes((folder / "coffee.jpg").read_bytes()[:200])
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def styles(tmp_path, style_img, style_img2) -> list[str]:
    style_img.save(tmp_path / "hubble.png")
    style_img2.rotate(90).save(tmp_path / "coffee_turned.png")
    return [str(tmp_path / "hubble.png"), str(tmp_path / "coffee_turned.png")]


def summary_of(out: Path) -> tuple[list[dict], dict]:
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out / "summary.json").read_text())


def test_folder_with_a_broken_image_then_a_rerun_that_does_nothing(photos, styles, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["batch", str(photos), "--style", styles[0], "--style", styles[1], "-o", str(out),
            "--workers", "2", *TINY]
    assert main(args) == 1  # a pair failed
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of 6 pairs failed" in err[0] and "broken__hubble-" in err[0]

    rows, info = summary_of(out)
    states = {r["pair"].rsplit("-", 1)[0]: r["state"] for r in rows}
    assert states == {"broken__hubble": "failed", "broken__coffee_turned": "failed",
                      "cat__hubble": "done", "cat__coffee_turned": "done",
                      "coffee__hubble": "done", "coffee__coffee_turned": "done"}
    broken = next(r for r in rows if r["pair"].startswith("broken__hubble-"))
    # a failed pair names no output: there is none
    assert "damaged or truncated" in broken["error"] and broken["output"] == ""
    for r in rows:
        if r["state"] == "done":
            image = Image.open(r["output"])
            assert max(image.size) == 32
            record = json.loads(Path(r["output"] + ".json").read_text())
            assert record["inputs"]["styles"] == [r["style"]] and record["iterations"] == 3
            assert float(r["loss_total"]) == pytest.approx(record["losses"]["total"])
            # every style target came shared from the parent: none computed per pair
            assert r["style_targets_computed"] == "0"
            assert 0 < float(r["cpu_seconds"]) and 0 < float(r["seconds"])
    coffee = batch.pair_name(photos / "coffee.jpg", Path(styles[0]))
    assert Image.open(out / f"{coffee}.png").size == (32, 21)  # the photo's shape
    assert info["done"] == 4 and info["failed"] == 2 and info["workers"] == 2
    assert info["style_targets"] == {"shared": True, "computed": 2, "seconds": pytest.approx(
        info["style_targets"]["seconds"])}
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []

    # a second run: the finished pairs are left alone (same files), only the broken ones retried
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png*")}
    assert main([a for a in args if a not in ("--workers", "2")]) == 1
    capsys.readouterr()
    rows, info = summary_of(out)
    assert (info["done"], info["skipped"], info["failed"]) == (0, 4, 2)
    # the default pool: workers x threads = cores, no more workers than pairs to run
    cores = os.cpu_count() or 1
    assert info["workers"] == min(cores, 2) and info["workers"] * info["threads"] == cores
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png*")} == before
    skipped = next(r for r in rows if r["pair"].startswith("cat__hubble-"))
    assert skipped["state"] == "skipped" and float(skipped["loss_total"]) > 0

    # other options make other images: nothing counts as done
    plan = batch.plan_batch([str(photos)], styles, str(out), Config.from_options(size=32, iterations=4))
    assert plan.done == {} and len(plan.pending) == 6


def test_names_do_not_change_when_inputs_are_added_and_old_names_are_kept(tmp_path, content_img,
                                                                          styles, capsys):
    """d1/x.png alone, then with d2/x.png beside it: d1/x's pair keeps its name and is not
    redone. Outputs named the way earlier versions did (x__hubble, x-<digest>__hubble) are
    recognised by their record and kept where they are, not redone."""
    d1, d2, out = tmp_path / "d1", tmp_path / "d2", tmp_path / "out"
    d1.mkdir(), d2.mkdir()
    content_img.save(d1 / "x.png")
    content_img.rotate(180).save(d2 / "x.png")
    config = Config.from_options(size=32, iterations=3)
    alone = batch.plan_batch([str(d1 / "x.png")], styles[:1], str(out), config)
    both = batch.plan_batch([str(d1 / "x.png"), str(d2 / "x.png")], styles[:1], str(out), config)
    assert both.pairs[0].name == alone.pairs[0].name != both.pairs[1].name
    assert both.pairs[0].output == alone.pairs[0].output

    assert main(["batch", str(d1 / "x.png"), "--style", styles[0], "-o", str(out), "--workers", "1",
                 *TINY]) == 0
    made = alone.pairs[0].output
    assert made.is_file()
    both = batch.plan_batch([str(d1 / "x.png"), str(d2 / "x.png")], styles[:1], str(out), config)
    assert list(both.done) == [alone.pairs[0].name] and both.pending == [both.pairs[1]]

    # the names of earlier versions: x__hubble (x alone) and x-<digest>__hubble (two x)
    for legacy in batch.legacy_names(d1 / "x.png", Path(styles[0]))[:2]:
        old = out / f"{legacy}.png"
        made.rename(old)
        Path(f"{made}.json").rename(f"{old}.json")
        again = batch.plan_batch([str(d1 / "x.png"), str(d2 / "x.png")], styles[:1], str(out), config)
        assert list(again.done) == [alone.pairs[0].name] and again.pairs[0].output == old
        old.rename(made)
        Path(f"{old}.json").rename(f"{made}.json")
    # the summary points at the file that holds the pair's image
    old = out / f"{batch.legacy_names(d1 / 'x.png', Path(styles[0]))[0]}.png"
    made.rename(old)
    Path(f"{made}.json").rename(f"{old}.json")
    summary = run_batch(batch.plan_batch([str(d1 / "x.png")], styles[:1], str(out), config),
                        workers=1, progress=False)
    assert [(r["state"], r["output"]) for r in summary.rows] == [("skipped", str(old))]
    assert not made.exists()


def test_shared_targets_are_what_a_run_computes_itself(content_img, style_img):
    config = Config.from_options(size=32, iterations=3)
    content, style = to_t(content_img), to_t(style_img)
    plain = Stylizer(config).run(content, [style])
    targets = StyleTargets()
    assert Stylizer(config, style_targets=targets).network.prepare_style_targets([style]) == 1
    assert (len(targets), targets.misses) == (1, 1)
    shared = Stylizer(config, style_targets=targets).run(content, [style])
    assert targets.hits == 1 and targets.misses == 1  # used, not recomputed
    assert torch.equal(plain.image, shared.image)
    # another style (or the same at another scale) is a miss, computed and kept
    Stylizer(config, style_targets=targets).run(content, [style.flip(-1)])
    assert targets.misses == 2 and len(targets) == 2


def _crash_or_echo(task: PairTask) -> PairOutcome:
    """A worker function for the pool test: the pair named boom kills its process."""
    if task.name.startswith("boom"):
        os._exit(3)
    return PairOutcome(task.name, DONE)


def _no_setup(*args) -> None:
    pass


def test_a_worker_that_dies_fails_its_pair_only():
    tasks = [PairTask(name, b"", "", ".png", {}, "", "") for name in ("boom", "ok1", "ok2", "ok3")]
    pool = LocalPool(workers=1, threads=1, function=_crash_or_echo, initializer=_no_setup)
    outcomes = {o.name: o for o in pool.run({}, None, {}, iter(tasks))}
    assert {n: o.state for n, o in outcomes.items()} == {"boom": FAILED, "ok1": DONE, "ok2": DONE,
                                                         "ok3": DONE}
    assert "worker process died" in outcomes["boom"].error


def test_resume_after_a_kill(tmp_path, content_img, styles):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for i in range(2):
        content_img.rotate(90 * i).save(a / f"p{i}.png")
    content_img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(b / "p0.png")
    out = tmp_path / "out"
    # a folder and a glob; two photos called p0
    cmd = [sys.executable, "-m", "nstyle", "batch", str(a), str(b / "*.png"), "--style", styles[0],
           "-o", str(out), "--format", "jpg", "--size", "32", "--iterations", "40",
           "--tolerance", "0", "--workers", "1", "--threads", "1", "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.jpg.json")):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no pair finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the batch and its worker, mid-run
        proc.wait()
    finished = {p.name for p in out.glob("*.jpg.json")}
    assert 1 <= len(finished) < 3
    assert main([*cmd[3:]]) == 0
    rows, info = summary_of(out)
    assert info["skipped"] == len(finished) and info["done"] == 3 - len(finished)
    assert all(r["state"] in ("done", "skipped") for r in rows)
    names = [r["pair"] for r in rows]
    assert len(set(names)) == 3 and all("__hubble-" in n for n in names)
    assert sum(n.startswith("p0__") for n in names) == 2  # the two p0 stay apart
    for r in rows:
        assert r["output"].endswith(".jpg")
        Image.open(r["output"]).load()  # complete images, none half-written
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_bad_arguments_are_one_line_errors(tmp_path, styles, capsys, monkeypatch):
    def error(args) -> str:
        assert main(["batch", *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("nstyle: error:"), lines
        return lines[0]

    assert "does not exist" in error([str(tmp_path / "nothing"), "--style", styles[0], "-o", str(tmp_path / "o")])
    assert "matches no file" in error([str(tmp_path / "*.gif"), "--style", styles[0], "-o", str(tmp_path / "o")])
    assert "--style" in error([styles[0], "-o", str(tmp_path / "o")])
    assert "does not exist" in error([styles[0], "--style", str(tmp_path / "x.png"), "-o", str(tmp_path / "o")])
    assert "nothing to blend" in error([styles[0], "--style", styles[0], "-o", str(tmp_path / "o"),
                                        "--style-blend-weights", "1,2"])
    assert "--workers" in error([styles[0], "--style", styles[0], "-o", str(tmp_path / "o"), "--workers", "0"])
    assert "ray://" in error([styles[0], "--style", styles[0], "-o", str(tmp_path / "o"), "--cluster", "x"])
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    msg = error([styles[0], "--style", styles[0], "-o", str(tmp_path / "o"), "--cluster", "auto"])
    assert "pip install 'nstyle[cluster]'" in msg
    assert not (tmp_path / "o").exists()
