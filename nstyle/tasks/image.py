"""The still-image task: one content photo painted in the styles of one run (``Stylizer``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from nstyle.core.events import Progress
from nstyle.core.plan import schedule
from nstyle.io.images import encode_image
from nstyle.io.inputs import LoadedInputs
from nstyle.io.record import LossHistory, build_record
from nstyle.io.speed import record_run
from nstyle.options.config import Config
from nstyle.tasks.base import IMAGE, RESULT_PNG, TaskContext, TaskOutput, TaskProgress


@dataclass
class ImageTask:
    kind: ClassVar[str] = IMAGE

    config: Config
    loaded: LoadedInputs
    #: the inputs' names as the run record shows them (upload names, not paths)
    names: dict[str, Any]

    def planned_iterations(self) -> int:
        mixing = self.loaded.fine_style is not None and self.loaded.coarse_style is not None
        coarse_hw = tuple(self.loaded.coarse_style.shape[-2:]) if mixing else None
        return schedule(self.config, tuple(self.loaded.content.shape[-2:]), coarse_hw).total_iterations

    def run(self, context: TaskContext) -> TaskOutput:
        history = LossHistory()

        def on_progress(event: Progress) -> None:
            history(event)
            context.report(TaskProgress(event.iteration, event.iterations, event.losses, event.elapsed,
                                        part=event.scale, parts=event.scales, phase=event.phase,
                                        preview=event.preview))

        loaded = self.loaded
        result = context.stylizer(self.config).run(loaded.content, loaded.styles, **loaded.run_arguments(),
                                                   callback=on_progress, cancel=context.cancel)
        if context.local:
            record_run(self.config, result)  # this machine's speed, for the page's estimates
        image = result.to_pil()
        record = build_record(self.config, result, inputs=self.names, history=history)
        return TaskOutput({RESULT_PNG: encode_image(image, ".png")}, record,
                          {"iterations": result.iterations, "iterations_total": self.planned_iterations(),
                           "losses": result.losses, "output_size": [image.width, image.height]})
