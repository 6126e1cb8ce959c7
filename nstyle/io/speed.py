"""This machine's measured speed, kept between runs: what ``nstyle.core.estimate`` needs.

    seconds = speed.estimate_seconds(config, plan)     # None when never measured here
    seconds = speed.estimate_seconds(config, plan, measure=True)   # measures once if needed
    speed.record_run(config, result)                   # after a run: its timings refine it

The figures are kept per machine and device (CPU model or GPU name, precision, threads,
torch version) in ``speed.json`` in nstyle's cache folder. The first estimate on a machine
times a tiny run (96 and 192 px, a few iterations: seconds); every finished run then adds
its own per-step timings, and the newest samples win, so the estimate follows how busy the
machine is. Estimates are a convenience: a cache that cannot be read or written never
fails a run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

import torch

from nstyle.core import estimate
from nstyle.core.device import resolve_device, resolve_precision
from nstyle.core.events import Result
from nstyle.core.plan import Plan
from nstyle.core.stylizer import Stylizer
from nstyle.core.vgg import cache_dir
from nstyle.options.config import Config
from nstyle.options.layers import halo_for

#: the tiny run that measures a machine: a warm-up scale, then two scales of the sizes
#: people start with (so the fit has two sizes and extrapolates little), a few iterations
#: each, never stopping early
MEASURE_OPTIONS = {"scales": "64,128,256", "scale_iterations": "2,6,6", "tolerance": 0.0}
#: iterations at the start of a size that are not counted: a process's first iterations
#: at a new size run several times slower (measured at 128 px on 2 cores: 1.68 and 1.75 s,
#: then 0.18 to 0.37 s), which a few iterations' mean would take for the machine's speed
WARMUP_ITERATIONS = 2
#: the options of the user's config that change the speed, copied into the measuring run
SPEED_OPTIONS = ("device", "precision", "pooling", "padding")
FILE_NAME = "speed.json"

_lock = threading.Lock()  # one writer per process (the service records from worker threads)


def speed_file() -> Path:
    return cache_dir() / FILE_NAME


def machine_key(config: Config) -> str:
    """What the speed depends on besides the run's size: device, precision, threads, torch."""
    device = resolve_device(config.model.device)
    dtype = resolve_precision(config.model.precision, device)
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = _cpu_name() or platform.machine()
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    return f"{device.type}|{what}|{precision}|{torch.get_num_threads()} threads|torch {torch.__version__}"


def _cpu_name() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _load_all() -> dict[str, Any]:
    try:
        data = json.loads(speed_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _record_of(key: str) -> estimate.SpeedRecord:
    try:
        return estimate.SpeedRecord.from_dict(_load_all().get(key) or {})
    except (TypeError, ValueError):  # an older or damaged file: start again
        return estimate.SpeedRecord()


def save_record(key: str, record: estimate.SpeedRecord) -> None:
    """Written to a temporary file and renamed, so a reader never sees half of it."""
    path = speed_file()
    try:
        with _lock:
            data = _load_all()
            data[key] = record.to_dict()
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".speed-", dir=path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, path)
    except OSError:
        pass


def known_speed(config: Config) -> Optional[estimate.Speed]:
    """The speed measured on this machine and device, or None when never measured."""
    record = _record_of(machine_key(config))
    return record.speed() if record.steps else None


def _halo(config: Config) -> int:
    """The margin of a tile of this run (its deepest layer's; see ``vgg.halo_for``)."""
    layers = list(config.loss.style_layers) + list(config.loss.content_layers)
    return halo_for(layers) if layers else estimate.DEFAULT_HALO


def run_samples(config: Config, result: Result) -> tuple[list[estimate.StepSample], float]:
    """A finished run's samples (per step: pixels, iterations run, seconds) and the seconds
    it spent outside its steps."""
    plan, timings, halo = result.plan, result.timings, _halo(config)
    samples = []
    for step in plan.scales if plan is not None else ():
        ran, seconds = step.iterations_run, timings.get(f"optimize_{step.size}")
        if ran and seconds is not None:
            samples.append(estimate.StepSample(estimate.work(step, halo), ran,
                                               seconds, timings.get(f"targets_{step.size}", 0.0)))
    if plan is not None and plan.mix is not None and plan.mix.iterations_run and "mix" in timings:
        samples.append(estimate.StepSample(estimate.work(plan.mix, halo),
                                           plan.mix.iterations_run, timings["mix"], 0.0))
    accounted = sum(s.optimize_seconds + s.setup_seconds for s in samples)
    return samples, timings.get("total", accounted) - accounted


def _add(config: Config, result: Result) -> estimate.SpeedRecord:
    key = machine_key(config)
    record = _record_of(key)
    samples, rest = run_samples(config, result)
    if samples:
        record.add(samples, rest)
        save_record(key, record)
    return record


def record_run(config: Config, result: Result) -> None:
    """Adds a finished run's timings to this machine's samples (the estimates model the
    gatys method's plan; an nnst run's steps are another kind of work and are left out)."""
    if config.optim.method != "gatys":
        return
    _add(config, result)


def measure(config: Config) -> estimate.Speed:
    """Times a tiny run on ``config``'s device (seconds) and keeps its figures; the speed
    comes back even when the cache folder cannot be written.

    Each step's first iteration is counted with its setup, not its iterations: on a CPU
    it also builds the kernels for that image size, which in a tiny run would pass for
    most of the per-iteration time (a real run's hundred iterations make it small)."""
    options = {name: getattr(config.model, name) for name in SPEED_OPTIONS}
    tiny = Config.from_options(**options, **MEASURE_OPTIONS)
    gen = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 192, 256, generator=gen)
    style = torch.rand(1, 3, 256, 256, generator=gen)
    stamps: dict[int, list[float]] = {}
    result = Stylizer(tiny).run(content, [style], callback=lambda e: stamps.setdefault(
        e.scale, []).append(e.elapsed))
    samples = []
    for index, step in enumerate(result.plan.scales, start=1):
        if index == 1:
            continue  # the warm-up
        times = stamps[index][WARMUP_ITERATIONS:]
        # the median interval: one iteration slowed by another program says little
        steady = statistics.median(b - a for a, b in zip(times, times[1:])) * (len(times) - 1)
        whole = result.timings[f"optimize_{step.size}"] + result.timings[f"targets_{step.size}"]
        samples.append(estimate.StepSample(estimate.work(step), len(times) - 1,
                                           steady, max(0.0, whole - steady), measuring=True))
    key = machine_key(config)
    record = _record_of(key)
    record.add(samples, 0.0)
    save_record(key, record)
    return record.speed()


def estimate_seconds(config: Config, plan: Plan, *, measure_if_unknown: bool = False
                     ) -> Optional[float]:
    """Seconds a run of ``plan`` should take here; None when the speed is not known (and
    ``measure_if_unknown`` is false)."""
    speed = known_speed(config)
    if speed is None:
        if not measure_if_unknown:
            return None
        speed = measure(config)
    return estimate.seconds(plan, speed, _halo(config))
