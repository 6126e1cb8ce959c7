"""Runs a task in this process: the service's worker thread (the default executor)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from nstyle.core.events import CancelToken
from nstyle.tasks.base import Task, TaskContext, TaskOutput, TaskProgress


class LocalTaskRunner:
    """``RayTaskRunner``'s counterpart: the task runs here, keeping resumable state in
    ``workdir`` (the job's folder)."""

    def run(self, task: Task, *, report: Callable[[TaskProgress], None], cancel: CancelToken,
            workdir: Optional[Path] = None) -> TaskOutput:
        return task.run(TaskContext(report, cancel, workdir=workdir))
