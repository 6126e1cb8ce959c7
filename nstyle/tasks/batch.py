"""Many photos x a few paintings: every (content, style) pair stylized into one folder.

    plan = plan_batch(["photos/", "more/*.jpg"], ["starry.jpg", "scream.jpg"], "out/", config)
    summary = nstyle.exec.pool.run_batch(plan)  # where it runs: nstyle.exec (a pool, or Ray)

Each pair's output is ``OUT/<content>__<style>-<tag>.<ext>`` (``pair_name``: the tag is a
digest of the two files' paths, so adding inputs never renames a pair) with its run record
beside it (``.json``), both written atomically, the record last: a pair whose record exists and was
made from the same images and options is done, so a rerun (after a kill, after adding
photos) does only what is missing. A pair that fails (a broken image, out of memory) is
recorded in ``summary.csv`` / ``summary.json`` and the others go on.

Work done once: the parent process decodes each style and computes its Gram targets for
every scale (``Stylizer.prepare_style_targets``); workers receive them with the
configuration when they start (Ray: once, through the object store) and load VGG once
each, so a pair costs only its own optimization. Workers get bytes, never paths, and send
back encoded images: the parent is the only process that touches OUT.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from nstyle.options.config import Config
from nstyle.errors import BadOption, BadOutput, NStyleError
from nstyle.core.stylizer import Stylizer
from nstyle.core.targets import StyleTargets
from nstyle.io.images import OUTPUT_FORMATS, decode_image, encode_image, save_bytes, save_json, to_tensor
from nstyle.io.record import LossHistory, build_record

#: files a folder argument contributes (an explicit file may have any name)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
SUMMARY_FIELDS = ("pair", "content", "style", "output", "state", "seconds", "cpu_seconds", "iterations",
                  "loss_total", "loss_content", "loss_style", "style_targets_computed", "error")
DONE, SKIPPED, FAILED, NOT_RUN = "done", "skipped", "failed", "not run"
#: a worker process, besides the run's own estimated peak: interpreter, torch, VGG weights
WORKER_OVERHEAD_BYTES = 600 * 2 ** 20


# --------------------------------------------------------------------------- planning


@dataclass
class Pair:
    """One (content, style) pair and where its output goes."""

    name: str  # ``pair_name``: the summary's key and the output's stem (but see ``legacy_names``)
    content: Path
    style: Path
    output: Path
    key: str = ""  # digest of the options and both images' bytes ("" if unreadable)

    @property
    def record(self) -> Path:
        return Path(str(self.output) + ".json")


@dataclass
class BatchPlan:
    config: Config
    out_dir: Path
    pairs: list[Pair]
    #: names of the pairs already done (output and record from the same images and options)
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    command: Optional[list[str]] = None

    @property
    def pending(self) -> list[Pair]:
        return [p for p in self.pairs if p.name not in self.done]


def expand_contents(patterns: Sequence[str]) -> list[Path]:
    """Files, folders (their image files, not recursive) and globs ('**' recurses), in the
    order given, each file once."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not matches:
                raise BadOption(f"folder {pattern!r} has no image files ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            matches = [path]
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise BadOption(f"{pattern!r} matches no file")
        else:
            raise BadOption(f"content {pattern!r} does not exist")
        found.extend(matches)
    unique: dict[Path, Path] = {}
    for p in found:  # kept as the user spelled them (they go in the records)
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def _readable_stem(path: Path) -> str:
    return path.stem.replace(" ", "_")


def _path_digest(*paths: Path) -> str:
    return hashlib.sha1("\n".join(str(p.resolve()) for p in paths).encode()).hexdigest()


def pair_name(content: Path, style: Path, digits: int = 6) -> str:
    """``<content>__<style>-<tag>``: both files' stems, and ``digits`` hex digits of a
    digest of both full paths. It depends on these two files only, so adding other inputs
    (another cat.jpg from another folder) never renames a pair and never redoes it."""
    tag = _path_digest(content, style)[:digits]
    return f"{_readable_stem(content)}__{_readable_stem(style)}-{tag}"


def _pair_names(pairs: Sequence[tuple[Path, Path]]) -> list[str]:
    """``pair_name`` of each pair; the rare pairs whose 6-digit tags clash (same stems
    too) get the whole digest instead."""
    names = [pair_name(c, s) for c, s in pairs]
    clashes = {n for n, count in collections.Counter(names).items() if count > 1}
    return [pair_name(c, s, 40) if n in clashes else n for n, (c, s) in zip(names, pairs)]


def legacy_names(content: Path, style: Path) -> list[str]:
    """The names earlier versions gave this pair, which depended on the other inputs: the
    plain stems, each with its own path's digest when another input shared its stem."""
    def forms(path: Path) -> list[str]:
        stem = _readable_stem(path)
        return [stem, f"{stem}-{_path_digest(path)[:6]}"]

    return [f"{c}__{s}" for c in forms(content) for s in forms(style)]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes; '' when it cannot be read (the pair then fails, with
    the reason, when it is run)."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return ""


def pair_key(config: Config, content_digest: str, style_digest: str) -> str:
    if not content_digest or not style_digest:
        return ""
    options = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(f"{options}\n{content_digest}\n{style_digest}".encode()).hexdigest()


def plan_batch(contents: Sequence[str], styles: Sequence[str], out_dir: str, config: Config,
               fmt: str = "png", command: Optional[list[str]] = None) -> BatchPlan:
    """Every content x style pair, its output name, and which pairs a previous run
    finished. Raises ``BadOption``/``BadOutput`` for paths that cannot work at all."""
    suffix = "." + fmt.lower().lstrip(".")
    if suffix not in OUTPUT_FORMATS:
        raise BadOption(f"--format {fmt!r}: use one of {', '.join(sorted({s[1:] for s in OUTPUT_FORMATS}))}")
    if not styles:
        raise BadOption("no style image was given; use --style PATH (more than once for several)")
    content_paths = expand_contents(contents)
    style_paths = []
    for s in styles:
        if not Path(s).is_file():
            raise BadOption(f"style image {s!r} {'is a folder' if Path(s).is_dir() else 'does not exist'}")
        style_paths.append(Path(s))
    unique: dict[Path, Path] = {}
    for p in style_paths:  # each file once, as the user spelled it first (as contents)
        unique.setdefault(p.resolve(), p)
    style_paths = list(unique.values())
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BadOutput(f"output folder {out_dir!r} is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadOutput(f"cannot create the output folder {out_dir!r}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise BadOutput(f"output folder {out_dir!r} is not writable")
    style_digests = {s: file_digest(s) for s in style_paths}
    plan = BatchPlan(config, out, [], command=command)
    combos = [(c, s) for c in content_paths for s in style_paths]
    content_digests = {c: file_digest(c) for c in content_paths}
    for (c, s), name in zip(combos, _pair_names(combos)):
        key = pair_key(config, content_digests[c], style_digests[s])
        plan.pairs.append(Pair(name, c, s, out / (name + suffix), key))
    _find_finished(plan, suffix)
    return plan


def _find_finished(plan: BatchPlan, suffix: str) -> None:
    """Marks the pairs a previous run finished: under their own name, else under a name an
    older nstyle gave them (``legacy_names``; the pair then keeps pointing at that file,
    which is neither redone nor renamed). Each file is claimed by one pair at most."""
    claimed = set()
    for pair in plan.pairs:
        record = _finished_record(pair)
        if record is not None:
            plan.done[pair.name] = record
            claimed.add(pair.output)
    for pair in plan.pairs:
        if pair.name in plan.done:
            continue
        for legacy in legacy_names(pair.content, pair.style):
            found = dataclasses.replace(pair, output=plan.out_dir / (legacy + suffix))
            record = None if found.output in claimed else _finished_record(found)
            if record is not None:
                pair.output = found.output
                plan.done[pair.name] = record
                claimed.add(found.output)
                break


def _finished_record(pair: Pair) -> Optional[dict[str, Any]]:
    """The record of a previous run of this very pair, when its output is complete."""
    if not pair.key or not pair.output.is_file():
        return None
    try:
        record = json.loads(pair.record.read_text())
    except (OSError, ValueError):
        return None
    batch = record.get("batch") if isinstance(record, dict) else None
    return record if isinstance(batch, dict) and batch.get("key") == pair.key else None


# --------------------------------------------------------------------------- one pair


@dataclass
class PairTask:
    """What a worker needs for one pair: bytes and names, never a path to open."""

    name: str
    content: bytes
    style_id: str  # sha256 of the style's bytes: which of the shared styles
    suffix: str
    inputs: dict[str, Any]  # the paths as the user gave them, for the run record
    output: str
    key: str
    command: Optional[list[str]] = None


@dataclass
class PairOutcome:
    name: str
    state: str
    seconds: float = 0.0
    iterations: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    error: str = ""
    image: Optional[bytes] = None  # encoded in the output's format
    record: Optional[dict[str, Any]] = None
    #: style Gram targets this pair had to compute itself (0: all came shared)
    style_targets_computed: int = 0
    #: CPU time of the worker process for this pair (every thread): what the pair costs
    #: whatever else the machine was doing, unlike ``seconds``
    cpu_seconds: float = 0.0


def stylize_pair(stylizer, task: PairTask, style) -> PairOutcome:
    """Runs one pair on a worker's ``Stylizer`` (``style``: the decoded style tensor).
    Every error becomes the pair's outcome: one pair never stops the batch."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    targets = stylizer.shared_targets
    misses = targets.misses if targets is not None else 0
    try:
        content = to_tensor(decode_image(task.content, f"content image {task.inputs['content']!r}"))
        history = LossHistory()
        result = stylizer.run(content, [style], callback=history)
        image = encode_image(result.to_pil(), task.suffix)
        computed = (targets.misses - misses) if targets is not None else 0
        record = build_record(stylizer.config, result, inputs=task.inputs, output=task.output,
                              command=task.command, history=history)
        record["batch"] = {"key": task.key, "pair": task.name, "style_targets_computed": computed}
        return PairOutcome(task.name, DONE, time.perf_counter() - t0, result.iterations,
                           dict(result.losses), image=image, record=record,
                           style_targets_computed=computed, cpu_seconds=time.process_time() - cpu0)
    except NStyleError as exc:
        error = str(exc)
    except MemoryError:
        error = "out of memory; use a smaller --size or fewer --workers"
    except Exception as exc:  # a bug must not end the batch: the pair fails with it
        error = f"internal error: {type(exc).__name__}: {exc}"
    return PairOutcome(task.name, FAILED, time.perf_counter() - t0, error=error)


class WorkerState:
    """A worker process's long-lived objects: one ``Stylizer`` (VGG loaded once) per
    configuration, and the decoded styles."""

    def __init__(self) -> None:
        self.stylizers: dict[str, Any] = {}
        self.styles: dict[str, Any] = {}

    def stylizer(self, config_dict: dict[str, Any], targets):
        key = json.dumps(config_dict, sort_keys=True)
        if key not in self.stylizers:
            self.stylizers[key] = Stylizer(Config.from_dict(config_dict))
        stylizer = self.stylizers[key]
        stylizer.shared_targets = targets
        return stylizer

    def style(self, style_id: str, data: bytes):
        if style_id not in self.styles:
            self.styles[style_id] = to_tensor(decode_image(data, "style image"))
        return self.styles[style_id]

    def run(self, config_dict, task: PairTask, style_bytes: bytes, targets) -> PairOutcome:
        """``targets``: the shared ``StyleTargets``; None: each pair computes its own."""
        try:
            stylizer = self.stylizer(config_dict, targets if targets is not None else StyleTargets())
            style = self.style(task.style_id, style_bytes)
        except NStyleError as exc:
            return PairOutcome(task.name, FAILED, error=str(exc))
        return stylize_pair(stylizer, task, style)


# --------------------------------------------------------------------------- the batch


@dataclass
class BatchSummary:
    rows: list[dict[str, Any]]  # one per pair, in the plan's order (SUMMARY_FIELDS)
    info: dict[str, Any]  # counts, backend, timings, style targets

    @property
    def failed(self) -> int:
        return sum(r["state"] == FAILED for r in self.rows)


def summary_row(pair: Pair, state: str, seconds: float = 0.0, iterations: int = 0,
         losses: Optional[dict[str, float]] = None, error: str = "",
         computed: Optional[int] = None, cpu_seconds: Optional[float] = None) -> dict[str, Any]:
    losses = losses or {}

    def part(prefix: str) -> Optional[float]:
        values = [v for k, v in losses.items() if k.startswith(prefix)]
        return sum(values) if values else None

    # a pair that failed or did not run has no output (a file left there is not its)
    output = str(pair.output) if state in (DONE, SKIPPED) else ""
    return {"pair": pair.name, "content": str(pair.content), "style": str(pair.style),
            "output": output, "state": state, "seconds": round(seconds, 3),
            "cpu_seconds": None if cpu_seconds is None else round(cpu_seconds, 3),
            "iterations": iterations, "loss_total": losses.get("total"),
            "loss_content": part("content."), "loss_style": part("style."),
            "style_targets_computed": computed, "error": error}


def skipped_row(pair: Pair, record: dict[str, Any]) -> dict[str, Any]:
    """A pair a previous run finished: its figures come from its record."""
    losses = record.get("losses") if isinstance(record.get("losses"), dict) else {}
    seconds = (record.get("timings") or {}).get("total", 0.0)
    return summary_row(pair, SKIPPED, seconds, record.get("iterations") or 0, losses,
                computed=(record.get("batch") or {}).get("style_targets_computed"))


def remove_stale_temporaries(plan: BatchPlan) -> int:
    """Temporary files a killed run left half-written (``.NAME.*.tmp`` of this plan's
    outputs and records; nothing else in the folder is touched)."""
    names = {p.output.name for p in plan.pairs} | {p.record.name for p in plan.pairs}
    removed = 0
    for path in plan.out_dir.glob(".*.tmp"):
        if any(path.name.startswith(f".{n}.") for n in names):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def read_styles(pairs: Sequence[Pair]) -> tuple[dict[Path, str], dict[str, bytes], dict[Path, str]]:
    """(style path -> id, id -> bytes, style path -> error) for the styles ``pairs`` use;
    a style that cannot be read or decoded fails its pairs, not the batch."""
    ids, data, errors = {}, {}, {}
    for path in dict.fromkeys(p.style for p in pairs):
        try:
            raw = path.read_bytes()
            decode_image(raw, f"style image {str(path)!r}")
        except OSError as exc:
            errors[path] = f"style image {str(path)!r} cannot be read: {exc.strerror or exc}"
            continue
        except NStyleError as exc:
            errors[path] = str(exc)
            continue
        ids[path] = hashlib.sha256(raw).hexdigest()
        data[ids[path]] = raw
    return ids, data, errors


def shared_style_targets(config: Config, styles: dict[str, bytes]):
    """Every style's Gram targets at every scale, computed here once; returns
    (``StyleTargets``, estimated peak bytes of one run, seconds spent)."""
    t0 = time.perf_counter()
    stylizer = Stylizer(config, style_targets=StyleTargets())
    tensors = [to_tensor(decode_image(b, "style image")) for b in styles.values()]
    side = config.output_size
    plans = stylizer.memory_plan((side, side), [tuple(t.shape[-2:]) for t in tensors])
    peak = int(max(p["estimated_peak_gib"] for p in plans) * 2 ** 30)
    stylizer.network.prepare_style_targets(tensors)
    return stylizer.shared_targets, peak, time.perf_counter() - t0


def pair_tasks(pairs: Sequence[Pair], style_ids: dict[Path, str], plan: BatchPlan,
           unreadable: list[PairOutcome]) -> Iterator[PairTask]:
    """Tasks read lazily (thousands of photos are never all in memory); a content that
    cannot be read goes to ``unreadable``."""
    for pair in pairs:
        try:
            content = pair.content.read_bytes()
        except OSError as exc:
            unreadable.append(PairOutcome(pair.name, FAILED, error=f"content image "
                                          f"{str(pair.content)!r} cannot be read: {exc.strerror or exc}"))
            continue
        yield PairTask(pair.name, content, style_ids[pair.style], pair.output.suffix,
                       {"content": str(pair.content), "styles": [str(pair.style)]},
                       str(pair.output), pair.key, plan.command)


def write_outcome(pair: Pair, outcome: PairOutcome) -> PairOutcome:
    """The image, then its record (whose presence marks the pair done), each atomically."""
    if outcome.state != DONE:
        return outcome
    try:
        save_bytes(outcome.image, pair.output)
        save_json(outcome.record, pair.record)
    except OSError as exc:
        outcome.state, outcome.error = FAILED, f"cannot write {str(pair.output)!r}: {exc.strerror or exc}"
    return outcome


def summarize(plan: BatchPlan, rows: list[dict[str, Any]], info: dict[str, Any],
               t0: float) -> BatchSummary:
    counts = {state: sum(r["state"] == state for r in rows) for state in (DONE, SKIPPED, FAILED, NOT_RUN)}
    seconds = time.time() - t0
    run_seconds = info.get("run_seconds") or seconds
    info.update(pairs=len(rows), **{k.replace(" ", "_"): v for k, v in counts.items()},
                seconds=round(seconds, 3),
                images_per_minute=round(60 * counts[DONE] / run_seconds, 3) if counts[DONE] else 0.0,
                config=plan.config.to_dict(), command=plan.command)
    return BatchSummary(rows, info)


def write_summary(out_dir: Path, summary: BatchSummary) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SUMMARY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in summary.rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    save_bytes(text.getvalue().encode(), out_dir / "summary.csv")
    save_json({**summary.info, "results": summary.rows}, out_dir / "summary.json")


