"""Where a batch runs: a pool of worker processes on this machine (``LocalPool``), or Ray
tasks (``nstyle.exec.ray``); ``run_batch`` runs a planned batch (``nstyle.tasks.batch``) on
either and writes its summary.

    plan = plan_batch(["photos/", "more/*.jpg"], ["starry.jpg", "scream.jpg"], "out/", config)
    summary = run_batch(plan)                   # a local pool of worker processes
    summary = run_batch(plan, cluster="auto")   # the same work as Ray tasks
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable, Iterator, Optional

import torch

from nstyle.core.device import resolve_device
from nstyle.core.plan import available_memory
from nstyle.exec.ray import RayPool
from nstyle.io.console import progress_bar
from nstyle.options.config import Config
from nstyle.tasks import batch


_STATE: Optional[batch.WorkerState] = None
_SETUP: dict[str, Any] = {}


def _init_worker(config_dict, targets, styles: dict[str, bytes], threads: int) -> None:
    """Runs once in each worker process: threads, then VGG, before the first pair."""
    global _STATE
    torch.set_num_threads(threads)
    _STATE = batch.WorkerState()
    _SETUP.update(config=config_dict, targets=targets, styles=styles)
    _STATE.stylizer(config_dict, targets)


def _pool_task(task: batch.PairTask) -> batch.PairOutcome:
    assert _STATE is not None
    return _STATE.run(_SETUP["config"], task, _SETUP["styles"][task.style_id], _SETUP["targets"])


class LocalPool:
    """Worker processes on this machine. A worker that dies (killed for memory, a crash)
    breaks the whole pool: the pairs that were in it are run again in a new pool, each
    alone, so the one that kills its worker is found and reported failed and the others
    are not lost with it."""

    def __init__(self, workers: int, threads: int, function: Callable = _pool_task,
                 initializer: Callable = _init_worker) -> None:
        self.workers, self.threads = workers, threads
        self.function, self.initializer = function, initializer

    def run(self, config_dict, targets, styles: dict[str, bytes],
            tasks: Iterator[batch.PairTask]) -> Iterator[batch.PairOutcome]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        def start() -> ProcessPoolExecutor:
            # spawn: a forked copy of a process that already runs torch threads can hang
            return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=self.initializer,
                                       initargs=(config_dict, targets, styles, self.threads))

        pool, inflight, suspects = start(), {}, []  # inflight: future -> (task, alone)
        try:
            while True:
                self._fill(pool, inflight, suspects, tasks)
                if not inflight:
                    return
                finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
                broken = False
                for future in finished:
                    task, alone = inflight.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken = True
                        if alone:
                            yield batch.PairOutcome(task.name, batch.FAILED, error="its worker process died "
                                              "(out of memory? a crash?); try a smaller --size or fewer --workers")
                        else:
                            suspects.append(task)
                if broken:  # the pool is gone with every pair still in it
                    suspects.extend(task for task, _ in inflight.values())
                    inflight.clear()
                    pool.shutdown(wait=True, cancel_futures=True)
                    pool = start()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _fill(self, pool, inflight: dict, suspects: list, tasks: Iterator[batch.PairTask]) -> None:
        """Keeps every worker busy (two pairs each, so none waits for the next), except
        that a suspect runs alone once the pool has drained."""
        while not any(alone for _, alone in inflight.values()):
            if suspects:
                if not inflight:
                    task = suspects.pop(0)
                    inflight[pool.submit(self.function, task)] = (task, True)
                return
            if len(inflight) >= 2 * self.workers:
                return
            task = next(tasks, None)
            if task is None:
                return
            inflight[pool.submit(self.function, task)] = (task, False)


def local_pool_size(config: Config, pairs: int, workers: Optional[int],
                    threads: Optional[int], peak_bytes: int) -> tuple[int, int]:
    """(workers, threads per worker): by default as many workers as cores, fewer when
    their estimated memory does not fit or there are fewer pairs; threads so that
    workers x threads = cores. A GPU gets one worker (several would share it)."""
    cores = os.cpu_count() or 1
    if workers is None:
        if resolve_device(config.model.device).type != "cpu":
            workers = 1
        else:
            fit = max(1, available_memory() // (peak_bytes + batch.WORKER_OVERHEAD_BYTES))
            workers = max(1, min(cores, fit, pairs))
    if threads is None:
        threads = max(1, cores // workers)
    return workers, threads


def run_batch(plan: batch.BatchPlan, *, workers: Optional[int] = None, threads: Optional[int] = None,
              cluster: Optional[str] = None, share_style_targets: bool = True,
              progress: bool = True, pool: Optional[LocalPool] = None) -> batch.BatchSummary:
    """Runs the plan's pending pairs and writes ``summary.csv`` and ``summary.json``.
    ``cluster``: a Ray address (``nstyle.exec.ray``), else a local pool of ``workers``
    processes with ``threads`` each (defaults: ``local_pool_size``)."""
    t0 = time.time()
    batch.remove_stale_temporaries(plan)
    rows = {p.name: (batch.skipped_row(p, plan.done[p.name]) if p.name in plan.done else batch.summary_row(p, batch.NOT_RUN))
            for p in plan.pairs}
    by_name = {p.name: p for p in plan.pairs}
    pending = plan.pending
    style_ids, style_bytes, style_errors = batch.read_styles(pending)
    for p in pending:
        if p.style in style_errors:
            rows[p.name] = batch.summary_row(p, batch.FAILED, error=style_errors[p.style])
    runnable = [p for p in pending if p.style not in style_errors]
    info: dict[str, Any] = {"backend": "ray" if cluster else "local", "cluster": cluster,
                            "style_targets": {"shared": share_style_targets}}
    bar = progress_bar(len(plan.pairs), "pair", "batch", initial=len(plan.pairs) - len(runnable), quiet=not progress)
    try:
        if runnable:
            targets, peak, seconds = batch.shared_style_targets(plan.config, style_bytes)
            info["style_targets"].update(computed=len(targets), seconds=round(seconds, 3))
            backend, info["workers"], info["threads"] = backend_for(plan.config, len(runnable), workers,
                                                                 threads, cluster, peak, pool)
            unreadable: list[batch.PairOutcome] = []
            outcomes = backend.run(plan.config.to_dict(), targets if share_style_targets else None,
                                   style_bytes, batch.pair_tasks(runnable, style_ids, plan, unreadable))
            started = time.time()
            for outcome in _with_unreadable(outcomes, unreadable):
                o = batch.write_outcome(by_name[outcome.name], outcome)
                rows[o.name] = batch.summary_row(by_name[o.name], o.state, o.seconds, o.iterations, o.losses,
                                    o.error, o.style_targets_computed if o.state == batch.DONE else None,
                                    o.cpu_seconds if o.state == batch.DONE else None)
                bar.update(1)
                bar.set_postfix_str(f"failed={sum(r['state'] == batch.FAILED for r in rows.values())}",
                                    refresh=False)
            info["run_seconds"] = round(time.time() - started, 3)
    finally:
        bar.close()
        summary = batch.summarize(plan, [rows[p.name] for p in plan.pairs], info, t0)
        batch.write_summary(plan.out_dir, summary)
    return summary


def _with_unreadable(outcomes: Iterable[batch.PairOutcome], unreadable: list[batch.PairOutcome]
                     ) -> Iterator[batch.PairOutcome]:
    for outcome in outcomes:
        while unreadable:
            yield unreadable.pop()
        yield outcome
    while unreadable:
        yield unreadable.pop()


def backend_for(config: Config, pairs: int, workers: Optional[int], threads: Optional[int],
             cluster: Optional[str], peak: int, pool: Optional[LocalPool]):
    """(backend, workers, threads): Ray tasks, or a local pool sized to the machine."""
    if cluster:
        ray_pool = RayPool(cluster, threads=threads or 1, peak_bytes=peak, device=config.model.device)
        return ray_pool, ray_pool.slots, ray_pool.threads
    workers, threads = local_pool_size(config, pairs, workers, threads, peak)
    if pool is None:
        pool = LocalPool(workers, threads)
    return pool, pool.workers, pool.threads
