"""The video job: POST /api/videos, and how a worker runs one.

A video is one job in the ordinary queue (listed, followed by the same event stream,
cancelled, retried and deleted like the others), whose result is an MP4 (H.264, the clip's
rate, its sound copied) that a browser plays, and whose record is the clip's
(``nstyle.tasks.video_run``). What makes a job a video is its ``VIDEO_OPTION`` (the video
options, as JSON) among the options it was submitted with. Its progress counts the
iterations of every frame (``scale`` of ``scales`` is the frame of the clip, the phase
'video'); its previews are the frame being stylized.

The request is the file ``clip`` (MP4/MOV, MKV/WebM, AVI or GIF, read as the container its
first bytes say, never a format FFmpeg guesses), files ``style`` and options as text (the
engine's and ``temporal_weight``, ``flow``, ``frame_iterations``, ``independent``). It is
checked whole before anything is stored, as a job's is (the clip's first frame stands for
the photo), plus the server's video limits: upload size, duration, frames, pixels per
frame, output size, iterations over the clip. A retried video job continues after its last
finished frame: they are kept in the job's folder until the clip is complete.
"""

from __future__ import annotations

import io
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional


from nstyle.options.config import Config
from nstyle.errors import BadImage, BadOption, NStyleError
from nstyle.io.images import TooManyFrames, decode_image, load_image, save_image, save_json, to_tensor
from nstyle.core.plan import schedule
from nstyle.tasks.video import NOT_FOR_VIDEO, VIDEO_OPTION_NAMES, VideoOptions
from nstyle.tasks.video_run import ClipRun, digest_bytes
from nstyle.io.video_files import ClipOutput, open_upload
from nstyle.service.errors import OverLimit
from nstyle.service.store import PREVIEW_FILE, RECORD_FILE, SUCCEEDED, JobRow
from nstyle.service.uploads import (STYLE_FIELDS, InputImage, StoredInput, Submission, Upload, blame,
                                    check_submission, fmt_bytes)

#: the option that marks a stored job as a video: its video options, as JSON
VIDEO_OPTION = "video_options"
#: the upload field of the clip
CLIP_FIELD = "clip"
#: a video job's result, beside the other job files
VIDEO_RESULT_FILE = "result.mp4"
#: the stored clip's extension, by container
CLIP_EXTENSIONS = {"mp4": ".mp4", "matroska": ".mkv", "avi": ".avi", "gif": ".gif"}


def is_video(options: dict[str, Any]) -> bool:
    return VIDEO_OPTION in options


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


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
    data = _png(first)
    frame_upload = Upload.of_bytes("content", f"{name} (frame 1).png", data)
    styles = [u for u in uploads if u.field in STYLE_FIELDS]
    sub = check_submission([frame_upload, *styles], engine_fields, settings, decode_gate)
    _check_video_work(sub.config, options, clip.info.frames, (first.width, first.height), settings)
    content = sub.entry("content").image
    ext = CLIP_EXTENSIONS[clip.container or "gif"]
    sub.files.append(StoredInput(CLIP_FIELD, CLIP_FIELD, None, InputImage(
        content.name.rsplit(" (frame 1)", 1)[0], upload, ext, content.width, content.height,
        content.thumbnail)))
    sub.options.update({k: v.strip() for k, v in video_fields.items() if v.strip()})
    sub.options[VIDEO_OPTION] = json.dumps(options.to_dict())
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


def planned_iterations(config: Config, options: VideoOptions, frames: int, wh: tuple[int, int]) -> int:
    """Iterations over the whole clip: the first frame's schedule, then each later frame's."""
    first = schedule(config, (wh[1], wh[0]), None).total_iterations
    later = first if options.independent else options.frame_iterations
    return first + (frames - 1) * later


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


# --------------------------------------------------------------------------- the worker


def run_video_job(row: JobRow, config: Config, live, store, changed: Callable[[], None],
                  preview_seconds: float) -> dict[str, Any]:
    """A worker runs a video job: frames in turn (after those a previous try finished), the
    live state kept up to date, the MP4 and its record written to the job's files."""
    entry = row.inputs[CLIP_FIELD]
    clip = open_upload(store.file(row.id, entry["file"]), entry["name"], 10**12)
    styles, digests = [], []
    for e in row.inputs["styles"]:
        data = store.file(row.id, e["file"]).read_bytes()
        styles.append(to_tensor(decode_image(data, f"{e['key']} of job {row.id}")))
        digests.append(digest_bytes(data))
    options = VideoOptions.from_options(**json.loads(row.options[VIDEO_OPTION]))
    out = ClipOutput("video", store.file(row.id, VIDEO_RESULT_FILE), text=VIDEO_RESULT_FILE)
    run = ClipRun(clip, styles, digests, config, options, out, work_parent=store.job_dir(row.id))
    done = run.resume()
    n = clip.info.frames
    live.iterations = planned_iterations(config, options, n, (clip.info.width, clip.info.height))
    live.phase, live.scales = "video", n
    base = [sum(f["iterations"] for f in run.state["frames"])]  # finished frames' iterations
    start_iterations, t0 = base[0], time.perf_counter()

    def on_progress(p) -> None:
        e = p.event
        live.iteration, live.scale = base[0] + e.iteration, p.frame + 1
        live.losses, live.elapsed = e.losses, time.perf_counter() - t0
        ran = live.iteration - start_iterations
        live.eta = live.elapsed / ran * max(0, live.iterations - live.iteration) if ran else None
        now = time.monotonic()
        if e.iteration == 1 or now - live.preview_time >= preview_seconds:
            live.show(e.preview(), live.iteration)
            live.preview_time = now
        changed()

    poster = None
    for frame in run.frames(done, callback=on_progress, cancel=live.cancel):
        base[0] += frame.result.iterations
        poster = frame.image
    if poster is None:  # every frame was finished by an earlier try
        poster = load_image(run.frame_path(n - 1), "finished frame")
    names = {"clip": entry["name"], "styles": [e["name"] for e in row.inputs["styles"]]}
    record = run.write(names, record_path=store.file(row.id, RECORD_FILE))
    record["job"] = {"id": row.id, "options": row.options}
    save_json(record, store.file(row.id, RECORD_FILE))
    save_image(poster, store.file(row.id, PREVIEW_FILE))  # the picture the job list shows
    return {"state": SUCCEEDED, "iterations": record["iterations"],
            "iterations_total": live.iterations, "losses": run.state["frames"][-1]["losses"],
            "output_size": record["written"]["size"]}
