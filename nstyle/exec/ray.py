"""Ray: batch pairs and service jobs (every kind of ``Task``) as Ray tasks, for work past one machine.

Addresses (``--cluster``): ``auto`` joins the cluster this machine is part of (``ray start``
set it up), ``ray://HOST:PORT`` reaches one through Ray Client, ``local`` starts a private
Ray instance on this machine (several GPUs, or trying it out). Where Ray is already
initialized in this process (a notebook, a test), that instance is used as it is.

Tasks get bytes and tensors, never paths, and send back encoded images, so the workers
need no shared disk: only nstyle[cluster] installed, at the same version. A task asks for
a GPU where the cluster has them (and the device is not forced to cpu), ``threads`` CPUs,
and the memory its run is estimated to need, so Ray never packs more runs on a node than
it can hold. Ray itself is imported only here, and only when asked for.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Iterator, Optional

import torch

from nstyle import errors
from nstyle.tasks.batch import WORKER_OVERHEAD_BYTES, FAILED, PairOutcome, PairTask, WorkerState
from nstyle.errors import BadOption, Cancelled, NStyleError, RunFailed
from nstyle.core.events import CancelToken
from nstyle.io.images import decode_image, encode_image
from nstyle.tasks.base import TaskContext, TaskOutput, TaskProgress

INSTALL_HINT = "--cluster needs Ray, which is not installed here: pip install 'nstyle[cluster]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise BadOption(INSTALL_HINT) from None
    return ray


def check_address(address: str) -> str:
    if address in ("auto", "local") or (address.startswith("ray://") and len(address) > 6):
        return address
    raise BadOption(f"--cluster {address!r}: use auto, local or ray://HOST:PORT")


def connect(address: str):
    """The ``ray`` module, initialized for ``address`` (see the module doc)."""
    check_address(address)
    ray = import_ray()
    if ray.is_initialized():
        return ray
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = " (start one with 'ray start --head')" if address == "auto" else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadOption(f"cannot reach the Ray cluster at {address!r}{hint}: {first}") from None
    return ray


def task_options(ray, threads: int, peak_bytes: int, device: str) -> tuple[dict[str, Any], int]:
    """Ray resources of one run, and how many such runs the cluster holds at once."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if device != "cpu" else 0
    options: dict[str, Any] = {"num_cpus": threads, "max_retries": 1}
    if gpus:
        options["num_gpus"] = 1
    memory = peak_bytes + WORKER_OVERHEAD_BYTES
    largest = max((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
    if largest and memory > largest:
        raise errors.TooLarge(f"one run needs about {memory / 2 ** 30:.1f} GiB (estimated), more than "
                              f"any Ray node has ({largest / 2 ** 30:.1f} GiB); use a smaller --size")
    options["memory"] = memory
    slots = gpus if gpus else max(1, int(resources.get("CPU", 1) // threads))
    return options, slots


# --------------------------------------------------------------------------- batch pairs


_STATE: Optional[WorkerState] = None


def _ray_pair(config_dict, task: PairTask, style_bytes: bytes, targets, threads: int) -> PairOutcome:
    """One pair on a Ray worker; the worker process keeps its Stylizer (VGG) between tasks."""
    global _STATE
    torch.set_num_threads(threads)
    if _STATE is None:
        _STATE = WorkerState()
    return _STATE.run(config_dict, task, style_bytes, targets)


class RayPool:
    """``nstyle.exec.pool.LocalPool``'s counterpart: pairs as Ray tasks, a bounded number in flight."""

    def __init__(self, address: str, threads: int, peak_bytes: int, device: str) -> None:
        self.ray = connect(address)
        self.threads = threads
        self.options, self.slots = task_options(self.ray, threads, peak_bytes, device)

    def run(self, config_dict, targets, styles: dict[str, bytes],
            tasks: Iterator[PairTask]) -> Iterator[PairOutcome]:
        ray = self.ray
        remote = ray.remote(_ray_pair).options(**self.options)
        # put once: every task refers to the same copy in the object store
        config_ref, targets_ref = ray.put(config_dict), ray.put(targets)
        style_refs = {sid: ray.put(data) for sid, data in styles.items()}
        inflight: dict[Any, PairTask] = {}
        try:
            while True:
                while len(inflight) < 2 * self.slots:
                    task = next(tasks, None)
                    if task is None:
                        break
                    ref = remote.remote(config_ref, task, style_refs[task.style_id], targets_ref,
                                        self.threads)
                    inflight[ref] = task
                if not inflight:
                    return
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    task = inflight.pop(ref)
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died, the node went away
                        yield PairOutcome(task.name, FAILED, error=f"the Ray task failed: {_first_line(exc)}")
        finally:
            for ref in inflight:
                ray.cancel(ref)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


# --------------------------------------------------------------------------- service jobs


def _ray_task(task, preview_seconds: float):
    """A service job's task on a Ray worker, as a stream: progress events (with a preview
    PNG at most every ``preview_seconds``, and at every milestone), then the output or the
    error. The task runs in a thread so that a cancel (Ray interrupts this generator)
    reaches it as a ``CancelToken``. The worker process keeps its Stylizers (VGG) between
    tasks."""
    global _STATE
    if _STATE is None:
        _STATE = WorkerState()
    events: queue.Queue = queue.Queue()
    token = CancelToken()
    last_preview = [float("-inf")]

    def report(progress) -> None:
        item = {"kind": "progress", **progress.plain()}
        now = time.monotonic()
        due = progress.milestone or progress.iteration in (1, progress.iterations) \
            or now - last_preview[0] >= preview_seconds
        image = progress.preview() if due else None
        if image is not None:
            item["preview"], last_preview[0] = encode_image(image, ".png"), now
        events.put(item)

    def work() -> None:
        context = TaskContext(report, token, stylizer=lambda config: _STATE.stylizer(config.to_dict(), None),
                              local=False)
        try:
            output = task.run(context)
            events.put({"kind": "output", "files": output.files, "record": output.record,
                        "summary": output.summary})
        except NStyleError as exc:
            events.put({"kind": "error", "type": type(exc).__name__, "message": str(exc)})
        except BaseException as exc:  # noqa: BLE001 - reported to the service as the job's failure
            events.put({"kind": "error", "type": "RunFailed",
                        "message": f"internal error on the Ray worker: {type(exc).__name__}: {exc}"})

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = events.get()
            yield item
            if item["kind"] != "progress":
                return
    finally:  # also when Ray cancels this task: the run stops within one iteration
        token.cancel()
        thread.join()


class RayTaskRunner:
    """Runs service jobs of every kind (image, sheet, video) as Ray tasks instead of in the
    server's worker threads (``nstyle serve --cluster``); the job manager sees the same
    progress and output. A task on Ray keeps no state on the server's disk, so a retried
    video starts again from its first frame."""

    def __init__(self, address: str, preview_seconds: float = 1.0) -> None:
        self.ray = connect(address)
        self.preview_seconds = preview_seconds
        gpus = self.ray.cluster_resources().get("GPU", 0)
        self.options = {"num_cpus": 1, "num_gpus": 1 if gpus else 0, "max_retries": 0}

    def run(self, task, *, report, cancel, workdir=None):
        ray = self.ray
        options = dict(self.options, num_gpus=0 if task.config.model.device == "cpu" else self.options["num_gpus"])
        stream = ray.remote(_ray_task).options(**options).remote(task, self.preview_seconds)
        last: Optional[TaskProgress] = None
        while True:
            if cancel is not None and cancel.cancelled:
                ray.cancel(stream)
                done = f"after {last.iteration} of {last.iterations} iterations" if last else "before it started"
                raise Cancelled(f"cancelled {done}")
            ready, _ = ray.wait([stream], timeout=0.2)
            if not ready:
                continue
            try:
                item = ray.get(next(stream))
            except StopIteration:
                raise RunFailed("the Ray task ended without a result") from None
            except ray.exceptions.RayError as exc:
                raise RunFailed(f"the Ray task failed: {_first_line(exc)}") from None
            kind = item.pop("kind")
            if kind == "progress":
                png = item.pop("preview", None)
                last = TaskProgress(**item, preview=lambda png=png: _decoded(png))
                report(last)
            elif kind == "output":
                return TaskOutput(**item)
            else:
                cls = getattr(errors, item["type"], RunFailed)
                raise (cls if isinstance(cls, type) and issubclass(cls, NStyleError) else RunFailed)(item["message"])


def _decoded(png: Optional[bytes]):
    """A preview sent as PNG bytes, as the RGB picture it shows (None: none was sent)."""
    if png is None:
        return None
    return decode_image(png, "preview")
