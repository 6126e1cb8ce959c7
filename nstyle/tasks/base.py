"""A Task: one job of one kind (a still image, a contact sheet, a video), described by
what it needs (tensors and bytes, never a client's path) so that any executor can run it:
the service's worker thread, or a Ray worker on another machine (``nstyle.exec``).

A task reports its progress as ``TaskProgress`` events (iterations counted over the whole
job, the scale, cell or frame it is on, a preview when one is ready) and returns a
``TaskOutput``: the files of its result as bytes, its run record and the figures a job
list shows. It writes nothing of its own outside ``TaskContext.workdir``: what is kept,
and where, is the caller's business.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Protocol

from nstyle.core.events import CancelToken, IterationFigures
from nstyle.core.stylizer import Stylizer
from nstyle.options.config import Config

#: the kinds of job, as the service stores them
IMAGE, SHEET, VIDEO = "image", "sheet", "video"
KINDS = (IMAGE, SHEET, VIDEO)
#: the files a task's output names: the picture (image, sheet), the clip (video), and the
#: picture a job list shows for a clip
RESULT_PNG, RESULT_MP4, POSTER_PNG = "result.png", "result.mp4", "preview.png"


def no_preview() -> None:
    return None


@dataclass
class TaskProgress(IterationFigures):
    """One iteration of a task: ``iteration`` of ``iterations`` over the whole job; ``part``
    of ``parts`` is the scale (image), cell (sheet) or frame (video) being worked on."""

    iteration: int
    iterations: int
    losses: dict[str, float]
    elapsed: float
    part: int = 1
    parts: int = 1
    phase: str = "stylize"
    #: the picture so far (PIL RGB), or None when this event brings none
    preview: Callable[[], Any] = field(default=no_preview, repr=False)
    #: a preview worth showing at once (a finished cell), not only when one is due
    milestone: bool = False
    #: iterations an earlier try had done (a resumed video): not part of ``elapsed``
    resumed_at: int = 0

    @property
    def eta(self) -> Optional[float]:
        """Seconds left, from the mean time per iteration this try has run."""
        ran = self.iteration - self.resumed_at
        return self.elapsed / ran * max(0, self.iterations - self.iteration) if ran > 0 else None

    def plain(self) -> dict[str, Any]:
        """The figures as plain values (what crosses a process boundary), no preview."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "preview"}


@dataclass
class TaskOutput:
    """What a finished task made: ``files`` (name -> bytes: the result and whatever goes
    beside it), ``record`` (the run record, JSON-ready) and ``summary`` (iterations,
    iterations_total, losses, output_size, and ``error``: a note on a partial failure)."""

    files: dict[str, bytes]
    record: dict[str, Any]
    summary: dict[str, Any]


@dataclass
class TaskContext:
    """What an executor gives a running task."""

    report: Callable[[TaskProgress], None]
    cancel: CancelToken
    #: the Stylizer for a config: a worker process that keeps its network passes its own
    stylizer: Callable[[Config], Stylizer] = Stylizer
    #: a folder for state that lets a retried task resume (a video's finished frames);
    #: None: a temporary one, nothing resumes
    workdir: Optional[Path] = None
    #: the task runs on the machine that serves its estimates (its speed is recorded)
    local: bool = True


class Task(Protocol):
    """One job of one kind; picklable, so that it can be sent to another process."""

    kind: ClassVar[str]

    def planned_iterations(self) -> int:
        """Iterations over the whole job (its progress total), known before it starts."""
        ...

    def run(self, context: TaskContext) -> TaskOutput:
        ...
