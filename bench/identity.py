"""Behaviour fingerprint: a matrix of tiny CPU runs whose outputs must not change when the
code is only reorganised (issue 22's byte-identity check).

    python bench/identity.py record bench/results/identity-baseline   # before a change
    python bench/identity.py check  bench/results/identity-baseline   # after it: exit 1 on a difference

Every run goes through a stable front door (``python -m nstyle ...`` in a subprocess, the
public ``nstyle.run`` for progress events, ``nstyle.service.create_app`` for the OpenAPI
schema), so the script itself survives a move of the modules behind them. What it keeps
per case: the SHA-256 of every file written (images, frames, sheets, summaries), each run
record with the fields that differ between two identical runs removed (creation time,
timings, versions, platform, the scratch folder's path), and the events' iterations,
scales, phases and loss terms. One thread and fixed seeds make the runs repeatable.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import re
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 48  # tiny: the whole matrix takes a few minutes on one core
ITER = ["--iterations", "4"]
QUIET = ["-q", "--device", "cpu"]

#: name -> arguments after ``python -m nstyle`` (paths are relative to the scratch folder)
CLI_CASES: dict[str, list[str]] = {
    "default": ["c.png", "s.png", "-o", "out.png", "--size", "64", *ITER],
    "multiscale": ["c.png", "s.png", "-o", "out.png", "--scales", "32,64", "--scale-iterations", "4,3"],
    "tiled": ["c.png", "s.png", "-o", "out.png", "--size", "96", "--tile-size", "64", *ITER],
    "masks": ["c.png", "s.png:m.png", "s2.png", "-o", "out.png", "--size", str(SIZE), *ITER],
    "keep_mask": ["c.png", "s.png", "--keep-mask", "m.png", "-o", "out.png", "--size", str(SIZE), *ITER],
    "mix": ["c.png", "--fine-style", "s.png", "--coarse-style", "s2.png", "-o", "out.png",
            "--size", str(SIZE), "--mix-iterations", "3", *ITER],
    "mix_tiled": ["c.png", "--fine-style", "s.png", "--coarse-style", "s2.png", "-o", "out.png",
                  "--size", "96", "--tile-size", "64", "--mix-iterations", "3", *ITER],
    "adam": ["c.png", "s.png", "-o", "out.png", "--size", str(SIZE), "--optimizer", "adam", *ITER],
    "sgd": ["c.png", "s.png", "-o", "out.png", "--size", str(SIZE), "--optimizer", "sgd", *ITER],
    "bf16": ["c.png", "s.png", "-o", "out.png", "--size", str(SIZE), "--precision", "bf16", *ITER],
    "luminance": ["c.png", "s.png", "-o", "out.png", "--size", str(SIZE), "--preserve-colors", "luminance", *ITER],
    "histogram": ["c.png", "s.png", "-o", "out.png", "--size", str(SIZE), "--preserve-colors", "histogram", *ITER],
    "histogram_cholesky": ["c.png", "s.png", "-o", "out.png", "--size", str(SIZE), "--preserve-colors",
                           "histogram", "--color-match", "cholesky", *ITER],
    "swap": ["c.png", "s.png", "-o", "out.png", "--size", str(SIZE), "--preserve-colors", "swap", *ITER],
    "init_image": ["c.png", "s.png", "--init-image", "s2.png", "-o", "out.png", "--size", str(SIZE), *ITER],
    "init_noise": ["c.png", "s.png", "--init", "noise", "--seed", "3", "-o", "out.png", "--size", str(SIZE), *ITER],
    "blend": ["c.png", "s.png", "s2.png", "--style-blend-weights", "3,1", "-o", "out.png", "--size", str(SIZE), *ITER],
    "meancov": ["c.png", "s.png", "-o", "out.png", "--size", str(SIZE), "--style-loss", "meancov", *ITER],
    "neighbors": ["c.png", "s.png", "-o", "out.png", "--scales", "32,48", "--style-loss", "neighbors",
                  "--scale-iterations", "3"],
    "meancov_tiled": ["c.png", "s.png", "-o", "out.png", "--size", "96", "--tile-size", "64",
                      "--style-loss", "meancov", *ITER],
    "progression": ["c.png", "s.png", "-o", "out.png", "--size", str(SIZE), "--save-every", "2",
                    "--progression", "steps.png", *ITER],
    "sheet": ["sheet", "c.png", "--style", "s.png", "--style", "s2.png", "--style-weights", "1e4,1e5",
              "--size", str(SIZE), "-o", "out.png", *ITER],
    "video": ["video", "clip", "s.png", "-o", "vid", "--size", str(SIZE), "--iterations", "3",
              "--frame-iterations", "2"],
    "batch": ["batch", "c.png", "c2.png", "--style", "s.png", "--style", "s2.png", "-o", "batch",
              "--size", str(SIZE), "--workers", "1", "--threads", "1", *ITER],
}

#: Python-API cases whose progress events are kept: name -> nstyle.run keywords
EVENT_CASES: dict[str, dict] = {
    "events_default": dict(size=64, iterations=4, scales=[32, 64], scale_iterations=[3, 2]),
    "events_mix": dict(size=SIZE, iterations=3, mix_iterations=2, fine="s.png", coarse="s2.png"),
}

#: run-record fields that differ between two runs of the same code on the same machine
VOLATILE = {"created", "timings", "versions", "platform", "elapsed", "started", "finished"}


def volatile(key: str) -> bool:
    return key in VOLATILE or key.endswith("seconds") or key.endswith("per_minute")


def make_inputs(folder: Path) -> None:
    """Small real pictures from scikit-image (shipped in its wheel), a mask and a 3-frame clip."""
    from skimage import data

    def small(array, size=64):
        img = Image.fromarray(array).convert("RGB")
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
        return img

    small(data.chelsea()).save(folder / "c.png")
    small(data.astronaut()).save(folder / "c2.png")
    small(data.hubble_deep_field()).save(folder / "s.png")
    small(data.coffee()).save(folder / "s2.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[:32] = 255
    Image.fromarray(mask).save(folder / "m.png")
    clip = folder / "clip"
    clip.mkdir()
    base = np.asarray(small(data.chelsea(), 96))
    for i in range(3):  # a slow pan
        Image.fromarray(np.ascontiguousarray(base[:48, 2 * i: 2 * i + 72])).save(clip / f"{i:05d}.png")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scrub(value, root: str):
    """A record without its volatile fields, with the scratch folder's path made relative."""
    if isinstance(value, dict):
        return {k: scrub(v, root) for k, v in sorted(value.items()) if not volatile(k)}
    if isinstance(value, list):
        return [scrub(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root + os.sep, "").replace(root, ".")
    return value


def fingerprint(folder: Path, before: set[Path], root: str) -> dict:
    files, records = {}, {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path in before:
            continue
        rel = str(path.relative_to(folder))
        if path.suffix == ".json":
            records[rel] = scrub(json.loads(path.read_text()), root)
        elif path.suffix == ".csv":
            rows = list(csv.DictReader(path.read_text().splitlines()))
            records[rel] = [scrub(row, root) for row in rows]
        else:
            files[rel] = sha(path)
    return {"files": files, "records": records}


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
             NSTYLE_THREADS="1")
    return e


def run_cli(name: str, args: list[str], inputs: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"nstyle-id-{name}-") as tmp:
        work = Path(tmp)
        shutil.copytree(inputs, work, dirs_exist_ok=True)
        before = set(work.rglob("*"))
        args = list(args)
        if args[0] in ("sheet", "video", "batch"):
            args += ["-q"] + (["--device", "cpu"] if args[0] != "batch" else [])
        else:
            args += QUIET
        proc = subprocess.run([sys.executable, "-m", "nstyle", *args], cwd=work, env=env(),
                              capture_output=True, text=True, timeout=600)
        out = {"exit": proc.returncode, "stderr": proc.stderr.strip().splitlines()[-1:]
               if proc.returncode else []}
        out.update(fingerprint(work, before, str(work)))
        return out


EVENTS_SNIPPET = r"""
import json, sys, torch
torch.set_num_threads(1)
import nstyle
kw = json.loads(sys.argv[1])
fine, coarse = kw.pop("fine", None), kw.pop("coarse", None)
if fine:
    kw.update(fine_style=fine, coarse_style=coarse)
events = []
def keep(e):
    events.append(dict(iteration=e.iteration, iterations=e.iterations, scale=e.scale,
                       scales=e.scales, size=e.size, phase=e.phase,
                       losses={k: float(v).hex() for k, v in sorted(e.losses.items())},
                       shape=list(e.image.shape)))
result = nstyle.run("c.png", None if fine else "s.png", callback=keep, device="cpu", **kw)
import hashlib
digest = hashlib.sha256(result.image.detach().float().contiguous().numpy().tobytes()).hexdigest()
print(json.dumps({"events": events, "image": digest,
                  "losses": {k: float(v).hex() for k, v in sorted(result.losses.items())}}))
"""

SCHEMA_SNIPPET = r"""
import json, sys, tempfile
from nstyle.service.app import create_app
from nstyle.service.settings import ServiceSettings
with tempfile.TemporaryDirectory() as tmp:
    app = create_app(ServiceSettings(data_dir=tmp))
    print(json.dumps(app.openapi(), sort_keys=True))
"""


def run_snippet(snippet: str, arg: str, inputs: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="nstyle-id-py-") as tmp:
        shutil.copytree(inputs, tmp, dirs_exist_ok=True)
        proc = subprocess.run([sys.executable, "-c", snippet, arg], cwd=tmp, env=env(),
                              capture_output=True, text=True, timeout=600)
        if proc.returncode:
            return {"exit": proc.returncode, "stderr": proc.stderr.strip().splitlines()[-3:]}
        return json.loads(proc.stdout.strip().splitlines()[-1])


def record(selected: list[str]) -> dict:
    result = {}
    with tempfile.TemporaryDirectory(prefix="nstyle-id-inputs-") as tmp:
        inputs = Path(tmp)
        make_inputs(inputs)
        for name, args in CLI_CASES.items():
            if selected and name not in selected:
                continue
            print(f"  {name} ...", file=sys.stderr, flush=True)
            result[name] = run_cli(name, args, inputs)
        for name, kw in EVENT_CASES.items():
            if selected and name not in selected:
                continue
            print(f"  {name} ...", file=sys.stderr, flush=True)
            result[name] = run_snippet(EVENTS_SNIPPET, json.dumps(kw), inputs)
        if not selected or "openapi" in selected:
            print("  openapi ...", file=sys.stderr, flush=True)
            result["openapi"] = run_snippet(SCHEMA_SNIPPET, "", inputs)
    return result


#: a batch pair's name ends in a digest of its inputs' full paths (``tasks.batch.pair_name``),
#: which differ from one scratch folder to the next: compared without it
PAIR_TAG = re.compile(r"(__[^/\s\"]*?)-[0-9a-f]{6}\b")


def without_pair_tags(value):
    """``value`` with every batch pair name's path digest replaced by ``TAG``."""
    if isinstance(value, dict):
        return {without_pair_tags(k): without_pair_tags(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_pair_tags(v) for v in value]
    if isinstance(value, str):
        return PAIR_TAG.sub(r"\1-TAG", value)
    return value


def differences(old, new, path="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            if k not in new:
                out.append(f"{path}/{k}: missing now")
            elif k not in old:
                out.append(f"{path}/{k}: new")
            else:
                out += differences(old[k], new[k], f"{path}/{k}")
        return out
    if old != new:
        a, b = json.dumps(old)[:120], json.dumps(new)[:120]
        return [f"{path}: {a} -> {b}"]
    return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["record", "check"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--allow", default="",
                        help="comma-separated case names whose differences are expected (stated why elsewhere)")
    args = parser.parse_args(argv)
    selected = [s for s in args.only.split(",") if s]
    fresh = record(selected)
    failures = [f"{name}: exit {case['exit']} {case.get('stderr')}" for name, case in fresh.items()
                if case.get("exit")]
    if args.mode == "record":
        args.folder.mkdir(parents=True, exist_ok=True)
        path = args.folder / "fingerprint.json"
        if selected and path.exists():  # --only re-records those cases, keeps the others
            fresh = {**json.loads(path.read_text()), **fresh}
        path.write_text(json.dumps(fresh, indent=1, sort_keys=True))
        print(f"recorded {len(fresh)} cases in {args.folder / 'fingerprint.json'}")
        for f in failures:
            print("FAILED", f)
        return 1 if failures else 0
    baseline = json.loads((args.folder / "fingerprint.json").read_text())
    allowed = {s for s in args.allow.split(",") if s}
    bad = 0
    print(f"{'case':22} result")
    for name in baseline:
        if selected and name not in selected:
            continue
        diff = differences(without_pair_tags(baseline[name]), without_pair_tags(fresh.get(name, {})))
        if not diff:
            print(f"{name:22} identical")
            continue
        tag = "differs (allowed)" if name in allowed else "DIFFERS"
        bad += name not in allowed
        print(f"{name:22} {tag}")
        for line in diff[:8]:
            print(f"{'':24}{line}")
    print(f"{bad} case(s) differ unexpectedly" if bad else "every case identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
