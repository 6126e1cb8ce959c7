"""One clip stylized into a work folder, frame by frame, then written out whole.

A clip takes long (minutes to hours), so it must survive being stopped. Every finished
frame is saved (atomically) in a work folder beside the output, named after a hash of
everything that determines the frames (the input's bytes, the styles' bytes, the engine
and video options): running the same command again finds the folder and continues after
its last frame, from that frame as written; a changed option or input gets a folder of
its own. Only when every frame is done is the output written (atomically, ``videoio``),
with its run record beside it, and the work folder removed.

Used by ``nstyle video`` (``video_cli``) and by the service's video jobs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import shutil
import statistics
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from nstyle.options.config import Config
from nstyle.core.events import CancelToken
from nstyle.errors import BadImage
from nstyle.io.images import load_image, save_image, save_json
from nstyle.io.record import versions
from nstyle.tasks.video import FrameProgress, StylizedFrame, VideoOptions, VideoStylizer, later_frames_config
from nstyle.io.video_files import Clip, ClipOutput, write_clip

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
