"""One clip stylized into a work folder, frame by frame, then written out whole.

A clip takes long (minutes to hours), so it must survive being stopped. Every finished
frame is saved (atomically) in a work folder beside the output, named after a hash of
everything that determines the frames (the input's bytes, the styles' bytes, the engine
and video options): running the same command again finds the folder and continues after
its last frame, from that frame as written; a changed option or input gets a folder of
its own. Only when every frame is done is the output written (atomically, ``videoio``),
with its run record beside it, and the work folder removed.

Used by ``nstyle video`` (``nstyle.cli.video``) and, as a ``VideoTask``, by the service's
video jobs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Optional, Sequence

import torch

from nstyle.options.config import Config
from nstyle.core.events import CancelToken
from nstyle.errors import BadImage
from nstyle.core.plan import schedule
from nstyle.io.images import decode_image, encode_image, load_image, save_image, save_json, to_tensor
from nstyle.io.record import versions
from nstyle.tasks.video import FrameProgress, StylizedFrame, VideoOptions, VideoStylizer, later_frames_config
from nstyle.io.video_files import Clip, ClipOutput, open_upload, write_clip
from nstyle.tasks.base import POSTER_PNG, RESULT_MP4, VIDEO, TaskContext, TaskOutput, TaskProgress

STATE_FILE = "state.json"


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ClipRun:
    """The stylization of ``clip`` into ``out``; ``style_digests``: what identifies the
    style images (their files' SHA-256), for the work folder's key."""

    def __init__(self, clip: Clip, styles: Sequence[torch.Tensor], style_digests: Sequence[str],
                 config: Config, options: VideoOptions, out: ClipOutput,
                 work_parent: Optional[Path] = None) -> None:
        self.clip, self.config, self.options, self.out = clip, config, options, out
        self.stylizer = VideoStylizer(config, styles, options)
        key = json.dumps({"clip": clip.digest(), "fps": str(clip.info.fps), "styles": list(style_digests),
                          "config": config.to_dict(), "video": options.to_dict()}, sort_keys=True)
        self.key = digest_bytes(key.encode())[:12]
        parent = work_parent if work_parent is not None else out.path.parent
        self.work = parent / f"{out.path.name}.nstyle-{self.key}"
        self.state: dict[str, Any] = {"key": self.key, "frames": [], "plans": {}}

    # ---- the work folder ------------------------------------------------------------

    def frame_path(self, index: int) -> Path:
        return self.work / f"{index:05d}.png"

    def resume(self) -> int:
        """Opens (or creates) the work folder; returns how many frames are done already."""
        self.work.mkdir(exist_ok=True)
        path = self.work / STATE_FILE
        if path.exists():
            try:
                state = json.loads(path.read_text())
                if state.get("key") == self.key:
                    self.state = state
            except (OSError, ValueError):
                pass  # unreadable: start over (the frames are checked below anyway)
        done = 0
        while done < len(self.state["frames"]) and self.frame_path(done).exists():
            done += 1
        del self.state["frames"][done:]
        return done

    def check_plan(self) -> None:
        """The first frame's plan, from the clip's size only: ``TooLarge`` before any work."""
        w, h = self.clip.info.width, self.clip.info.height
        self.stylizer.plan(torch.zeros(1, 3, 1, 1).expand(1, 3, h, w))

    # ---- the frames -----------------------------------------------------------------

    def frames(self, done: int, callback: Optional[Callable[[FrameProgress], None]] = None,
               cancel: Optional[CancelToken] = None) -> Iterator[StylizedFrame]:
        """Stylizes the frames after the first ``done``, saving each (and the state) before
        yielding it."""
        previous = load_image(self.frame_path(done - 1), "finished frame") if done else None
        for frame in self.stylizer.frames(self.clip.frames(), start=done, previous=previous,
                                          total=self.clip.info.frames, callback=callback,
                                          cancel=cancel):
            save_image(frame.image, self.frame_path(frame.index))
            self.state["frames"].append(frame.summary())
            if frame.index in (0, 1) and frame.result.plan is not None:
                self.state["plans"]["first" if frame.index == 0 else "later"] = frame.result.plan.to_dict()
            save_json(self.state, self.work / STATE_FILE)
            yield frame

    def finished_frames(self) -> Iterator:
        for i in range(len(self.state["frames"])):
            yield load_image(self.frame_path(i), f"finished frame {i + 1}")

    # ---- the output -----------------------------------------------------------------

    def write(self, inputs: dict[str, Any], command: Optional[Sequence[str]] = None,
              record_path: Optional[Path] = None) -> dict[str, Any]:
        """Writes the output and its record (atomically) and removes the work folder;
        returns the record."""
        n = len(self.state["frames"])
        if n != self.clip.info.frames:
            raise BadImage(f"the clip was read as {self.clip.info.frames} frames but {n} were decoded")
        written = write_clip(self.finished_frames(), self.out, self.clip.info.fps,
                             audio_from=self.clip if self.clip.info.kind == "video" else None)
        record = self.record(inputs, written, command)
        save_json(record, record_path or record_path_for(self.out))
        shutil.rmtree(self.work, ignore_errors=True)
        return record

    def record(self, inputs: dict[str, Any], written: dict[str, Any],
               command: Optional[Sequence[str]]) -> dict[str, Any]:
        frames = self.state["frames"]
        later = frames[1:]
        errors = [f["temporal_error"] for f in later if f["temporal_error"] is not None]
        later_config = later_frames_config(self.config, self.options)
        device = self.stylizer.first.device
        return {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": list(command) if command is not None else None,
            "inputs": inputs, "output": self.out.text or str(self.out.path),
            "clip": self.clip.info.to_dict(), "written": written,
            "config": self.config.to_dict(), "video": self.options.to_dict(),
            "later_frames": {"scales": list(later_config.scale_sizes),
                             "iterations": list(later_config.scale_iteration_counts)},
            "seed": self.config.image.seed, "device": str(device),
            "precision": self.stylizer.first.precision, "versions": video_versions(),
            "platform": {"system": platform.system(), "machine": platform.machine(),
                         "threads": torch.get_num_threads()},
            "iterations": sum(f["iterations"] for f in frames),
            # mean |frame − previous frame warped|, on pixels where the flow is trusted
            "temporal_error": round(statistics.mean(errors), 4) if errors else None,
            "timings": {"total": round(sum(f["seconds"] for f in frames), 3),
                        "first_frame": frames[0]["seconds"],
                        "later_frame_mean": round(statistics.mean(f["seconds"] for f in later), 3)
                        if later else None},
            "plan": self.state["plans"], "frames": frames,
        }


def record_path_for(out: ClipOutput) -> Path:
    """OUT.json beside a file; FOLDER.json beside a folder of frames."""
    return out.path.with_name(out.path.name + ".json")


def video_versions() -> dict[str, str]:
    """``record.versions`` plus PyAV's and OpenCV's."""
    found = dict(versions())
    try:
        import av
        import cv2

        found.update(av=av.__version__, opencv=cv2.__version__)
    except ImportError:
        pass
    return found


def planned_iterations(config: Config, options: VideoOptions, frames: int, wh: tuple[int, int]) -> int:
    """Iterations over the whole clip: the first frame's schedule, then each later frame's."""
    first = schedule(config, (wh[1], wh[0]), None).total_iterations
    later = first if options.independent else options.frame_iterations
    return first + (frames - 1) * later


@dataclass
class VideoTask:
    """A clip as a job: its bytes and its styles' bytes in, the MP4 and a poster (the last
    frame) out. With a ``TaskContext.workdir``, finished frames are kept there, so a retry
    continues after the last of them."""

    kind: ClassVar[str] = VIDEO

    config: Config
    options: VideoOptions
    clip: bytes
    clip_name: str
    #: what the clip's container is, as a file extension (".mp4", ".mkv", ".avi", ".gif")
    clip_suffix: str
    frames: int
    frame_size: tuple[int, int]  # width, height
    styles: list[bytes]
    style_names: list[str]

    def planned_iterations(self) -> int:
        return planned_iterations(self.config, self.options, self.frames, self.frame_size)

    def run(self, context: TaskContext) -> TaskOutput:
        with tempfile.TemporaryDirectory(prefix="nstyle-video-") as tmp:
            folder = Path(tmp)
            clip_path = folder / f"clip{self.clip_suffix}"
            clip_path.write_bytes(self.clip)
            clip = open_upload(clip_path, self.clip_name, 10**12)  # checked when it was submitted
            styles = [to_tensor(decode_image(data, f"style image {i + 1}")) for i, data in enumerate(self.styles)]
            out = ClipOutput("video", folder / RESULT_MP4, text=RESULT_MP4)
            run = ClipRun(clip, styles, [digest_bytes(d) for d in self.styles], self.config, self.options,
                          out, work_parent=context.workdir if context.workdir is not None else folder)
            poster = self._frames(run, run.resume(), context)
            record = run.write({"clip": self.clip_name, "styles": list(self.style_names)},
                               record_path=folder / "record.json")
            files = {RESULT_MP4: out.path.read_bytes(), POSTER_PNG: encode_image(poster, ".png")}
        return TaskOutput(files, record, {
            "iterations": record["iterations"], "iterations_total": self.planned_iterations(),
            "losses": run.state["frames"][-1]["losses"], "output_size": record["written"]["size"]})

    def _frames(self, run: ClipRun, done: int, context: TaskContext):
        """Stylizes the frames after the first ``done``; returns the last (the poster)."""
        total = self.planned_iterations()
        before = [sum(f["iterations"] for f in run.state["frames"])]  # finished frames' iterations
        resumed_at, t0 = before[0], time.perf_counter()

        def on_progress(p) -> None:
            e = p.event
            context.report(TaskProgress(before[0] + e.iteration, total, e.losses, time.perf_counter() - t0,
                                        part=p.frame + 1, parts=self.frames, phase="video",
                                        preview=e.preview, milestone=e.iteration == 1,
                                        resumed_at=resumed_at))

        poster = None
        for frame in run.frames(done, callback=on_progress, cancel=context.cancel):
            before[0] += frame.result.iterations
            poster = frame.image
        if poster is None:  # every frame was finished by an earlier try
            poster = load_image(run.frame_path(self.frames - 1), "finished frame")
        return poster
