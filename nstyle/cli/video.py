"""The command line of ``nstyle video`` (registered in ``cli``).

    nstyle video IN STYLE [STYLE ...] -o OUT [--temporal-weight W] [--flow dis|farneback]
                 [--frame-iterations N] [--independent] [--fps F] [--overwrite] [engine options]

IN and OUT are a video file, a GIF, or a folder / printf pattern of frames
(``nstyle.io.video_files``). Progress is one bar over the whole clip (frame i of n, ETA); an
interrupted run keeps its finished frames in a work folder beside OUT and the same
command continues from there (``nstyle.tasks.video_run``). OUT and OUT.json (the run record)
appear only when the clip is complete. Bad input is one line and exit code 2, through
``cli.main`` like every other command.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from nstyle.cli.parser import PROG, Parser, add_config_options, config_from_args
from nstyle.options.config import iter_options
from nstyle.errors import BadOption, Cancelled
from nstyle.io.console import progress_bar
from nstyle.io.images import load_image, to_tensor
from nstyle.tasks.video import NOT_FOR_VIDEO, VideoOptions
from nstyle.tasks.video_run import ClipRun, digest_bytes, record_path_for
from nstyle.io.video_files import check_clip_output, open_clip, parse_fps


def add_video_options(parser: argparse.ArgumentParser) -> None:
    """One flag per ``VideoOptions`` field (values checked by ``VideoOptions``)."""
    group = parser.add_argument_group("video options")
    for f in dataclasses.fields(VideoOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            group.add_argument(flag, dest=f.name, action="store_true", default=None,
                               help=f.metadata["help"])
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": None,
                                  "help": f"{f.metadata['help']} (default: {f.default})"}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        else:
            kwargs["metavar"] = (f.type if isinstance(f.type, str) else f.type.__name__).upper()
        group.add_argument(flag, **kwargs)


def video_options_from_args(args: argparse.Namespace) -> VideoOptions:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(VideoOptions)
             if getattr(args, f.name, None) is not None}
    return VideoOptions.from_options(**given)


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog=f"{PROG} video", description="Stylize a clip without flicker (Ruder, "
                "Dosovitskiy & Brox 2016): each frame after the first starts from the previous "
                "stylized frame warped by the optical flow, and a temporal loss keeps what did not "
                "change the same. Re-running an interrupted command continues where it stopped.")
    p.add_argument("input", metavar="IN", help="a video file (mp4, mov, mkv, webm, ...), a GIF, "
                   "a folder of frames or a pattern such as frames/%%05d.png")
    p.add_argument("styles", nargs="+", metavar="STYLE", help="one or more style images")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="a video file (.mp4, "
                   ".mov, .mkv, .webm; H.264/VP9, the input's rate and sound), a .gif, a folder or "
                   "a pattern such as out/%%05d.png; its run record goes to OUT.json")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--fps", default=None, help="frame rate of a folder of frames (default: 25); "
                   "a video or GIF keeps its own")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_video_options(p)
    add_config_options(p, only=[o.name for o in iter_options() if o.section != "output"
                                and o.name not in NOT_FOR_VIDEO])
    return p


def _load_styles(paths: Sequence[str]) -> tuple[list, list[str]]:
    tensors, digests = [], []
    for i, path in enumerate(paths):
        what = "style image" if len(paths) == 1 else f"style image {i + 1}"
        tensors.append(to_tensor(load_image(path, what)))
        digests.append(digest_bytes(Path(path).read_bytes()))
    return tensors, digests


def cmd_video(argv: Sequence[str]) -> None:
    args = _parser().parse_args(argv)
    config = config_from_args(args)
    options = video_options_from_args(args)
    out = check_clip_output(args.output, args.overwrite)
    clip = open_clip(args.input, parse_fps(args.fps) if args.fps is not None else None)
    if args.fps is not None and clip.info.kind != "frames":
        raise BadOption(f"--fps is for a folder of frames; {args.input!r} has its own rate "
                        f"({float(clip.info.fps):g} fps)")
    styles, digests = _load_styles(args.styles)
    run = ClipRun(clip, styles, digests, config, options, out)
    run.check_plan()
    done = run.resume()
    n = clip.info.frames
    if done and not args.quiet:
        print(f"continuing after frame {done} of {n} (finished frames in {run.work})", file=sys.stderr)
    try:
        _stylize(run, done, n, args.quiet)
    except KeyboardInterrupt:
        kept = len(run.state["frames"])
        raise Cancelled(f"interrupted after frame {kept} of {n}; the finished frames are kept in "
                        f"{run.work}: run the same command again to continue") from None
    record = run.write({"clip": args.input, "styles": list(args.styles)}, command=[PROG, "video", *argv])
    if not args.quiet:
        written = record["written"]
        audio = f", sound {written['audio']}" if written["audio"] else ""
        error = record["temporal_error"]
        print(f"wrote {args.output} ({written['frames']} frames, {written['size'][0]}x{written['size'][1]}, "
              f"{written['fps']} fps{audio}; temporal error {error if error is not None else '-'} levels, "
              f"{record['timings']['total']:.1f} s) and {record_path_for(out)}", file=sys.stderr)


def _stylize(run: ClipRun, done: int, n: int, quiet: bool) -> None:
    bar = progress_bar(n, "frame", "video", initial=done, quiet=quiet)

    def on_progress(p) -> None:
        e = p.event
        bar.set_description(f"frame {p.frame + 1}/{n}", refresh=False)
        bar.set_postfix_str(f"iteration {e.iteration}/{e.iterations}", refresh=True)

    try:
        for _ in run.frames(done, callback=on_progress):
            bar.update(1)
    finally:
        bar.close()
