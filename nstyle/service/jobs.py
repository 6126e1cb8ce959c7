"""The queue: workers that run stored jobs, one at a time per worker.

Jobs wait in submission order. A worker takes the oldest, makes it the ``Task`` of its
stored kind (``nstyle.tasks``: image, sheet, video), has the runner run it (here, or on
Ray with ``serve --cluster``) with a ``CancelToken`` and a progress callback, and writes
the task's files, its run record and the final state. Progress lives in memory (``LiveState``) while a job runs: it changes many
times a second and is worthless after a restart, so only outcomes go to the store.

Restarts never lose a job: at start, queued jobs go back in the queue in their old order;
a job whose row still says 'running' belonged to a process that died (a crash, a kill):
it is marked 'interrupted' and can be retried, not re-run blindly (it may be what crashed
the process). A clean shutdown cancels running jobs and puts them back in the queue.
"""

from __future__ import annotations

import base64
import collections
import errno
import logging
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from PIL import Image

from nstyle.options.config import Config
from nstyle.core.events import CancelToken
from nstyle.errors import Cancelled, NStyleError
from nstyle.exec.local import LocalTaskRunner
from nstyle.exec.ray import RayTaskRunner
from nstyle.io.images import decode_image, encode_image, save_bytes, save_image, save_json
from nstyle.io.inputs import Inputs
from nstyle.tasks.base import SHEET, VIDEO, Task, TaskProgress
from nstyle.tasks.image import ImageTask
from nstyle.service.errors import Conflict, NotFound, QueueFull
from nstyle.service.settings import ServiceSettings
from nstyle.service.sheets import sheet_task
from nstyle.service.videos import video_task
from nstyle.service.store import (CANCELLED, FAILED, INTERRUPTED, PREVIEW_FILE, QUEUED, RECORD_FILE,
                                  RESULT_FILE, RUNNING, SUCCEEDED, JobRow, JobStore, input_entries)
from nstyle.service.uploads import Submission, release_memory

log = logging.getLogger("nstyle.service")

#: previews sent in the event stream are at most this big (the full-size one is an URL)
STREAM_PREVIEW_SIZE = 512
#: pauses between two tries to record a job's state while the store refuses (a lock held
#: by another process, a full disk): short at first, then at most this
RETRY_FIRST_SECONDS, RETRY_MAX_SECONDS = 0.1, 5.0


def is_disk_full(exc: BaseException) -> bool:
    """A full disk (or quota), as the OS or SQLite reports it."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.Error) and "full" in str(exc).lower()


def _internal(exc: BaseException) -> dict[str, Any]:
    return {"state": FAILED, "error": f"internal error: {type(exc).__name__}: {exc}",
            "error_status": 500}


@dataclass
class LiveState:
    """A running job's progress, shared between its worker and the event streams."""

    cancel: CancelToken = field(default_factory=CancelToken)
    iteration: int = 0
    iterations: int = 0  # the run's planned total (``Plan.total_iterations``)
    scale: int = 1
    scales: int = 1
    phase: str = "stylize"
    losses: dict[str, float] = field(default_factory=dict)
    elapsed: float = 0.0
    eta: Optional[float] = None
    preview_image: Any = None  # the latest preview (PIL), saved if the job does not succeed
    preview_png: Optional[bytes] = None  # full size, for GET .../preview
    preview_data_url: Optional[str] = None  # small, for the event stream
    preview_iteration: int = 0
    preview_time: float = 0.0
    deleted: bool = False  # deleted while running: the worker cleans up after itself
    requeue: bool = False  # cancelled by a server shutdown: goes back to the queue

    def show(self, image, iteration: int) -> None:
        """``image`` (PIL) becomes the job's preview, full size and for the event stream."""
        self.preview_image = image
        self.preview_png = encode_image(image, ".png")
        self.preview_data_url = _stream_data_url(image, self.preview_png)
        self.preview_iteration = iteration

    def progress(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "iterations": self.iterations,
                "percent": round(100.0 * self.iteration / self.iterations, 1) if self.iterations else 0.0,
                "elapsed": round(self.elapsed, 3),
                "eta": round(self.eta, 1) if self.eta is not None else None,
                "losses": dict(self.losses), "preview_iteration": self.preview_iteration,
                "scale": self.scale, "scales": self.scales, "phase": self.phase}


class JobManager:
    def __init__(self, settings: ServiceSettings, store: Optional[JobStore] = None) -> None:
        self.settings = settings
        self.store = store or JobStore(settings.data_dir)
        self._cond = threading.Condition()
        self._queue: collections.deque[str] = collections.deque()
        self._live: dict[str, LiveState] = {}
        # change counters the event streams poll: one per job, one for the queue as a whole
        # (a queued job's position moves when any other job starts or leaves)
        self._versions: dict[str, int] = collections.defaultdict(int)
        self._queue_version = 0
        self._workers: list[threading.Thread] = []
        self._stopping = False
        self._halt = threading.Event()  # set on stop: cuts a worker's retry pause short
        #: runs one job's stylization: here, or as a Ray task (``nstyle serve --cluster``)
        self.runner = job_runner(settings)

    # ---- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Recover what the previous process left, then start the workers."""
        for orphan in self.store.orphan_folders():
            shutil.rmtree(orphan, ignore_errors=True)
        now = time.time()
        for row in self.store.list(limit=-1, states=(RUNNING,)):
            log.warning("job %s was running when the server stopped: marked interrupted", row.id)
            self.store.update(row.id, state=INTERRUPTED, finished=now,
                              error="the server stopped while this job was running; "
                                    "retry it to run it again")
        with self._cond:
            self._stopping = False
            self._halt.clear()
            self._queue.extend(r.id for r in self.store.list(limit=-1, states=(QUEUED,),
                                                              oldest_first=True))
            if self._queue:
                log.info("re-queued %d job(s) from the previous run", len(self._queue))
            for i in range(self.settings.workers):
                t = threading.Thread(target=self._work, name=f"nstyle-worker-{i}", daemon=True)
                t.start()
                self._workers.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers; running jobs are cancelled and go back to the queue."""
        with self._cond:
            self._stopping = True
            self._halt.set()
            for live in self._live.values():
                live.requeue = True
                live.cancel.cancel()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():  # its row still says running: the next start marks it interrupted
                log.warning("%s did not stop within %.0f s", t.name, timeout)
        self._workers.clear()
        self.store.close()

    # ---- requests -----------------------------------------------------------------------

    def submit(self, sub: Submission) -> JobRow:
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down; try again in a moment")
            if len(self._queue) >= self.settings.max_queue:
                raise QueueFull(f"the queue is full ({self.settings.max_queue} jobs waiting); "
                                "try again when some have finished")
            row = self.store.add(sub)
            self._queue.append(row.id)
            self._changed(row.id, queue=True)
            self._cond.notify()
        return row

    def get(self, job_id: str) -> JobRow:
        row = self.store.get(job_id)
        if row is None:
            raise NotFound(f"no job {job_id!r} (deleted, or never created)")
        return row

    def cancel(self, job_id: str) -> JobRow:
        with self._cond:
            row = self.get(job_id)
            live = self._live.get(job_id)
            if live is not None:  # running: the worker ends it within one iteration
                live.cancel.cancel()
            elif row.state in (QUEUED, RUNNING):
                # the record first: if it cannot be written, nothing has changed
                self.store.update(job_id, state=CANCELLED, finished=time.time(),
                                  error="cancelled before it started", error_status=Cancelled.http_status)
                if job_id in self._queue:
                    self._queue.remove(job_id)
                self._changed(job_id, queue=True)
            else:
                raise Conflict(f"job {job_id} has already {_verb(row.state)}; nothing to cancel")
        return self.get(job_id)

    def retry(self, job_id: str) -> JobRow:
        """Put a failed, cancelled or interrupted job back in the queue, as submitted."""
        with self._cond:
            row = self.get(job_id)
            if row.state not in (FAILED, CANCELLED, INTERRUPTED):
                raise Conflict(f"job {job_id} is {row.state}; only failed, cancelled or "
                               "interrupted jobs can be retried")
            if self._stopping or len(self._queue) >= self.settings.max_queue:
                raise QueueFull(f"the queue is full ({self.settings.max_queue} jobs waiting); "
                                "try again when some have finished")
            self.store.update(job_id, state=QUEUED, started=None, finished=None, error=None,
                              error_status=None, iterations=None, iterations_total=None,
                              losses=None, output_size=None)
            for name in (RESULT_FILE, RECORD_FILE, PREVIEW_FILE):
                self.store.file(job_id, name).unlink(missing_ok=True)
            self._queue.append(job_id)
            self._changed(job_id, queue=True)
            self._cond.notify()
        return self.get(job_id)

    def delete(self, job_id: str) -> None:
        """Forget a job and its files; a running one is cancelled first."""
        with self._cond:
            self.get(job_id)
            self.store.delete(job_id)  # first: if the record cannot go, nothing else does
            if job_id in self._queue:
                self._queue.remove(job_id)
            live = self._live.get(job_id)
            if live is not None:
                live.deleted = True
                live.cancel.cancel()
            self._versions.pop(job_id, None)
            self._queue_version += 1

    # ---- what clients see -------------------------------------------------------------------

    def live(self, job_id: str) -> Optional[LiveState]:
        return self._live.get(job_id)

    def version(self, job_id: str) -> tuple[int, int]:
        """Changes when the job, or the queue it waits in, changes (cheap to poll)."""
        return self._versions.get(job_id, 0), self._queue_version

    def queue_position(self, job_id: str) -> Optional[int]:
        """1 for the next job to start; None when not queued."""
        with self._cond:
            try:
                return self._queue.index(job_id) + 1
            except ValueError:
                return None

    def queue_length(self) -> int:
        return len(self._queue)

    def preview_png(self, job_id: str) -> Optional[bytes]:
        live = self._live.get(job_id)
        if live is not None and live.preview_png is not None:
            return live.preview_png
        path = self.store.file(job_id, PREVIEW_FILE)
        return path.read_bytes() if path.exists() else None

    # ---- workers --------------------------------------------------------------------

    def _changed(self, job_id: str, queue: bool = False) -> None:
        self._versions[job_id] += 1
        if queue:
            self._queue_version += 1

    def _work(self) -> None:
        """One worker: takes the next job, runs it, records the outcome. It survives every
        exception: a job that cannot run fails with a message, and bookkeeping the store
        cannot take now (a lock held by another process, a full disk) is retried until it
        can, so the queue resumes by itself once the cause is gone."""
        while True:
            job_id = None
            try:
                taken = self._take()
                if taken is None:
                    return
                job_id, live = taken
                outcome = self._execute(job_id, live)
                release_memory()  # a job's decoded inputs and tensors: back to the OS
                self._finish(job_id, live, outcome)
            except Exception as exc:  # a bug in the bookkeeping itself: log it and keep serving
                log.exception("worker: unexpected error; going on with the next job")
                if job_id is not None:
                    self._abandon(job_id, exc)
                if self._halt.wait(1.0):
                    return

    def _abandon(self, job_id: str, exc: Exception) -> None:
        """After a bug: the job is no longer running here. Marked failed if the store takes
        it (once, no retry: the worker must go on); if not, its row still says running, and
        cancel or the next start ends it."""
        with self._cond:
            self._live.pop(job_id, None)
            self._changed(job_id, queue=True)
        try:
            self.store.update(job_id, finished=time.time(), **_internal(exc))
        except Exception:
            log.exception("job %s: could not record its failure", job_id)

    def _take(self) -> Optional[tuple[str, LiveState]]:
        """The next job, marked running; None when the server stops."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            job_id = self._queue.popleft()
            live = self._live[job_id] = LiveState()
            self._changed(job_id, queue=True)
        try:
            self._persist(job_id, state=RUNNING, started=time.time())
        except Exception:  # stopping while the store refused: leave it queued
            with self._cond:
                self._live.pop(job_id, None)
            return None
        with self._cond:
            self._changed(job_id)
        return job_id, live

    def _persist(self, job_id: str, **values: Any) -> None:
        """``store.update``, retried with a growing pause while the store refuses it (a
        lock, a full disk); gives up only when the server stops."""
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                self.store.update(job_id, **values)
                return
            except (sqlite3.Error, OSError) as exc:
                if self._stopping:
                    raise
                log.warning("job %s: cannot record %s yet (%s); retrying in %.1f s", job_id,
                            ", ".join(values), exc, delay)
                self._halt.wait(delay)
                delay = min(2 * delay, RETRY_MAX_SECONDS)

    def _execute(self, job_id: str, live: LiveState) -> dict[str, Any]:
        """Runs the job; every exception becomes the job's outcome."""
        try:
            return self._run(job_id, live)
        except Cancelled as exc:
            if live.requeue:
                return {"state": QUEUED, "started": None}
            return {"state": CANCELLED, "error": str(exc), "error_status": exc.http_status}
        except NStyleError as exc:
            return {"state": FAILED, "error": str(exc), "error_status": exc.http_status}
        except OSError as exc:
            if is_disk_full(exc):
                return {"state": FAILED, "error_status": 507, "error": "the server's disk is "
                        "full: the result could not be written; retry the job when space is free"}
            if not live.deleted:
                log.exception("job %s failed", job_id)
            return _internal(exc)
        except Exception as exc:  # a bug or an unexpected system error: keep serving
            if not live.deleted:
                log.exception("job %s failed", job_id)
            return _internal(exc)

    def _finish(self, job_id: str, live: LiveState, outcome: dict[str, Any]) -> None:
        if outcome["state"] in (FAILED, CANCELLED) and live.preview_image is not None \
                and not live.deleted:
            try:  # so a cancelled or failed job still shows how far it got
                save_image(live.preview_image, self.store.file(job_id, PREVIEW_FILE))
            except Exception:  # a full disk: the outcome matters, the preview does not
                pass
        try:
            if not live.deleted:
                if outcome["state"] != QUEUED:
                    outcome["finished"] = time.time()
                    outcome.setdefault("iterations", live.iteration)
                    outcome.setdefault("iterations_total", live.iterations or None)
                self._persist(job_id, **outcome)
        finally:  # even when stopping gave up: the next start marks the job interrupted
            with self._cond:
                self._live.pop(job_id, None)
                if live.deleted:
                    self._queue_version += 1
                else:
                    self._changed(job_id, queue=True)
        if live.deleted:  # it may have written files after delete() removed the folder
            shutil.rmtree(self.store.job_dir(job_id), ignore_errors=True)

    def _inputs(self, job_id: str, row: JobRow) -> tuple[Inputs, dict[str, Any]]:
        """The job's images, decoded from the files this server stored at submission (never
        from a path a client gave), and their upload names for the run record."""
        def image(entry: Optional[dict[str, Any]]) -> Any:
            if entry is None:
                return None
            data = self.store.file(job_id, entry["file"]).read_bytes()
            return decode_image(data, f"{entry['key']} of job {job_id}")

        def name(entry: Optional[dict[str, Any]]) -> Optional[str]:
            return None if entry is None else entry["name"]

        files, names = {}, {}
        for field_name, value in row.inputs.items():
            if isinstance(value, list):
                files[field_name] = [image(e) for e in value]
                names[field_name] = [name(e) for e in value]
            else:
                files[field_name], names[field_name] = image(value), name(value)
        return Inputs(**files), names

    def _run(self, job_id: str, live: LiveState) -> dict[str, Any]:
        row = self.get(job_id)
        task = self._task(row)
        live.iterations = task.planned_iterations()  # every step: scales, cells or frames
        output = self.runner.run(task, report=lambda p: self._progress(job_id, live, p), cancel=live.cancel,
                                 workdir=self.store.job_dir(job_id))
        for name, data in output.files.items():
            save_bytes(data, self.store.file(job_id, name))
        record = dict(output.record, job={"id": job_id, "options": row.options,
                                          "uploads": [e["name"] for e in input_entries(row.inputs)]})
        save_json(record, self.store.file(job_id, RECORD_FILE))
        return {"state": SUCCEEDED, **output.summary}

    def _task(self, row: JobRow) -> Task:
        """The stored job as the task of its kind, its inputs read from the files this
        server stored at submission."""
        config = Config.from_dict(row.config)
        if row.kind == VIDEO:
            return video_task(row, config, self.store)
        inputs, names = self._inputs(row.id, row)
        loaded = inputs.load(config, allow_paths=False)
        if row.kind == SHEET:
            return sheet_task(row, config, loaded, names)
        return ImageTask(config, loaded, names)

    def _progress(self, job_id: str, live: LiveState, p: TaskProgress) -> None:
        """A task's progress into the job's live state; its preview when one is due."""
        live.iteration, live.iterations = p.iteration, p.iterations
        live.losses, live.elapsed, live.eta = p.losses, p.elapsed, p.eta
        live.scale, live.scales, live.phase = p.part, p.parts, p.phase
        now = time.monotonic()
        if (p.milestone or p.iteration in (1, p.iterations)
                or now - live.preview_time >= self.settings.preview_seconds):
            image = p.preview()
            if image is not None:
                live.show(image, p.iteration)
                live.preview_time = now
        self._changed(job_id)

    def result_data_url(self, job_id: str) -> Optional[str]:
        """A finished job's result as the event stream's preview (for streams that missed
        the live previews: a fast job can end before its stream connects)."""
        path = self.store.file(job_id, RESULT_FILE)
        try:
            with Image.open(path) as img:
                return _stream_data_url(img.convert("RGB"))
        except OSError:
            return None


def job_runner(settings: ServiceSettings):
    """The settings' runner: ``LocalTaskRunner``, or a Ray one when ``cluster`` is set (it
    connects now, so a server with an unreachable cluster does not start)."""
    if settings.cluster is None:
        return LocalTaskRunner()
    return RayTaskRunner(settings.cluster, settings.preview_seconds)


def _stream_data_url(image, png: Optional[bytes] = None) -> str:
    """``image`` as a PNG data URL at most STREAM_PREVIEW_SIZE wide (``png``: its full-size
    encoding, reused when no shrinking is needed)."""
    small = image
    if max(image.size) > STREAM_PREVIEW_SIZE:
        small = image.copy()
        small.thumbnail((STREAM_PREVIEW_SIZE, STREAM_PREVIEW_SIZE))
    data = png if png is not None and small is image else encode_image(small, ".png")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _verb(state: str) -> str:
    return {SUCCEEDED: "succeeded", FAILED: "failed", CANCELLED: "been cancelled",
            INTERRUPTED: "been interrupted"}.get(state, state)

