"""The video job: POST /api/videos, and how a worker runs one.

A video is one job in the ordinary queue (listed, followed by the same event stream,
cancelled, retried and deleted like the others), whose result is an MP4 (H.264, the clip's
rate, its sound copied) that a browser plays, and whose record is the clip's
(``nstyle.tasks.video_run.VideoTask``). Its kind is stored with it (``video``); its video
options are kept, as JSON, among its options (``VIDEO_OPTION``). Its progress counts the
iterations of every frame (``scale`` of ``scales`` is the frame of the clip, the phase
'video'); its previews are the frame being stylized.

The request is the file ``clip`` (MP4/MOV, MKV/WebM, AVI or GIF, read as the container its
first bytes say, never a format FFmpeg guesses), files ``style`` and options as text (the
engine's and ``temporal_weight``, ``flow``, ``frame_iterations``, ``independent``,
``whole_frame_style``, ``deep_layer_in_later_frames``). It is
checked whole before anything is stored, as a job's is (the clip's first frame stands for
the photo), plus the server's video limits: upload size, duration, frames, pixels per
frame, output size, iterations over the clip. A retried video job continues after its last
finished frame: they are kept in the job's folder until the clip is complete (not under
``serve --cluster``, whose tasks keep nothing on the server's disk).
"""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Optional

from nstyle.options.config import Config
from nstyle.errors import BadImage, BadOption, NStyleError
from nstyle.io.images import TooManyFrames, encode_image
from nstyle.io.video_files import open_upload
from nstyle.tasks.base import RESULT_MP4, VIDEO
from nstyle.tasks.video import NOT_FOR_VIDEO, VIDEO_OPTION_NAMES, VideoOptions
from nstyle.tasks.video_run import VideoTask, planned_iterations
from nstyle.service.errors import OverLimit
from nstyle.service.store import JobRow
from nstyle.service.uploads import (STYLE_FIELDS, InputImage, StoredInput, Submission, Upload, blame,
                                    check_submission, fmt_bytes)

#: a video job's video options, as JSON, among its options
VIDEO_OPTION = "video_options"
#: the upload field of the clip
CLIP_FIELD = "clip"
#: a video job's result, beside the other job files
VIDEO_RESULT_FILE = RESULT_MP4
#: the stored clip's extension, by container
CLIP_EXTENSIONS = {"mp4": ".mp4", "matroska": ".mkv", "avi": ".avi", "gif": ".gif"}


def check_video(uploads: list[Upload], fields: list[tuple[str, str, int]], settings,
                decode_gate: Optional[threading.Semaphore] = None) -> Submission:
    """The whole video request checked (``check_submission`` with the clip's first frame as
    the photo, then the video's own limits); returns the job to store."""
    clips = [u for u in uploads if u.field == CLIP_FIELD]
    for u in uploads:
        if u.field != CLIP_FIELD and u.field not in STYLE_FIELDS:
            raise blame(BadOption(f"a video job takes only the clip ('clip') and style images "
                                  f"('style'), not {u.field!r}"), u.field)
    if len(clips) != 1:
        raise blame(BadImage("send exactly one clip, as the file field 'clip'" if not clips
                             else "send only one clip"), CLIP_FIELD)
    for name, value, _ in fields:
        if name in NOT_FOR_VIDEO and value.strip():
            raise blame(BadOption(f"{name} cannot be set for a video: it takes style images "
                                  "only, no scale-mixing pair"), name)
    video_fields = {name: value for name, value, _ in fields if name in VIDEO_OPTION_NAMES}
    options = _video_options(video_fields)
    engine_fields = [f for f in fields if f[0] not in VIDEO_OPTION_NAMES]
    upload = clips[0]
    name = upload.filename or "clip"
    if upload.size > settings.max_video_upload_bytes:
        raise blame(OverLimit(f"clip {name!r} is {fmt_bytes(upload.size)}, over "
                              f"this server's limit of {fmt_bytes(settings.max_video_upload_bytes)}"),
                    CLIP_FIELD)
    with tempfile.TemporaryDirectory(dir=settings.data_dir / "tmp") as tmp:
        path = Path(tmp) / "clip"
        upload.save(path)
        try:
            try:  # counted no further than one past the limit
                clip = open_upload(path, name, settings.max_video_pixels, settings.max_video_frames)
            except TooManyFrames:
                raise OverLimit(f"clip {name!r} has at least {settings.max_video_frames + 1} frames, "
                                f"over this server's limit of {settings.max_video_frames}") from None
            _check_clip(clip.info, name, settings)
            frames = clip.frames()
            first = next(frames)
            frames.close()  # the decoder, before the file goes
        except NStyleError as exc:
            raise blame(exc, CLIP_FIELD) from None
    data = encode_image(first, ".png")
    frame_upload = Upload.of_bytes("content", f"{name} (frame 1).png", data)
    styles = [u for u in uploads if u.field in STYLE_FIELDS]
    sub = check_submission([frame_upload, *styles], engine_fields, settings, decode_gate)
    _check_video_work(sub.config, options, clip.info.frames, (first.width, first.height), settings)
    content = sub.entry("content").image
    ext = CLIP_EXTENSIONS[clip.container or "gif"]
    sub.files.append(StoredInput(CLIP_FIELD, CLIP_FIELD, None, InputImage(
        content.name.rsplit(" (frame 1)", 1)[0], upload, ext, content.width, content.height,
        content.thumbnail, clip.info.frames)))
    sub.options.update({k: v.strip() for k, v in video_fields.items() if v.strip()})
    sub.options[VIDEO_OPTION] = json.dumps(options.to_dict())
    sub.kind = VIDEO
    return sub


def _video_options(given: dict[str, str]) -> VideoOptions:
    for name, value in given.items():  # one at a time, so that an error names its field
        if value.strip():
            try:
                VideoOptions.from_options(**{name: value})
            except NStyleError as exc:
                raise blame(exc, name) from None
    return VideoOptions.from_options(**{k: v for k, v in given.items() if v.strip()})


def _check_clip(info, name: str, settings) -> None:
    if info.frames > settings.max_video_frames:
        raise OverLimit(f"clip {name!r} has {info.frames} frames, over this server's limit of "
                        f"{settings.max_video_frames}")
    if info.seconds > settings.max_video_seconds:
        raise OverLimit(f"clip {name!r} lasts {info.seconds:.1f} s, over this server's limit of "
                        f"{settings.max_video_seconds:g} s")


def _check_video_work(config: Config, options: VideoOptions, frames: int, wh: tuple[int, int],
                      settings) -> None:
    size_field = "scales" if config.scale.scales is not None else "size"
    if config.output_size > settings.max_video_size:
        raise blame(BadOption(f"an output size of {config.output_size} px is over this server's "
                              f"limit of {settings.max_video_size} px for videos"), size_field)
    total = planned_iterations(config, options, frames, wh)
    if total > settings.max_video_iterations:
        field = "frame_iterations" if not options.independent else "iterations"
        raise blame(BadOption(f"{frames} frames make {total:,} iterations, over this server's "
                              f"limit of {settings.max_video_iterations:,} per video; use fewer "
                              "iterations or a shorter clip"), field)


# --------------------------------------------------------------------------- the task


def video_task(row: JobRow, config: Config, store) -> VideoTask:
    """The stored video job as the task a worker runs (its clip and styles as bytes)."""
    entry = row.inputs[CLIP_FIELD]
    path = store.file(row.id, entry["file"])
    frames = entry.get("frames")  # counted at submission
    if frames is None:  # a job stored before the count was kept with its clip
        frames = open_upload(path, entry["name"], 10**12).info.frames
    styles = row.inputs["styles"]
    return VideoTask(config, VideoOptions.from_options(**json.loads(row.options[VIDEO_OPTION])),
                     path.read_bytes(), entry["name"], path.suffix, frames, (entry["width"], entry["height"]),
                     [store.file(row.id, e["file"]).read_bytes() for e in styles],
                     [e["name"] for e in styles])
