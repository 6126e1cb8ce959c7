"""The command line: parses argv into a ``Config``, draws progress, maps errors to exit codes.

    nstyle CONTENT STYLE[:MASK] [STYLE[:MASK] ...] -o OUTPUT [options]
    nstyle reconstruct content IMAGE --layer relu3_1 -o OUTPUT [options]
    nstyle reconstruct style IMAGE --layers relu1_1,relu2_1 -o OUTPUT [options]
    nstyle example [-o OUTPUT] [options]
    nstyle explore units|activations|reconstruct ... -o OUTPUT [options]   (see explore_cli)
    nstyle sheet CONTENT --style S1 --style S2 [--style-weights 1e4,1e5,1e6] -o OUTPUT
    nstyle layers
    nstyle styles                                  (the built-in paintings, usable by name)
    nstyle batch CONTENT... --style S [--style S2 ...] -o OUT_DIR [--workers N] [--cluster ADDRESS]
    nstyle video IN STYLE [STYLE ...] -o OUT [--temporal-weight W] [--frame-iterations N]   (see video_cli)
    nstyle serve [--host 127.0.0.1] [--port 8000] [--data DIR] [--token T] [--workers N]
    nstyle gui [--data DIR]

Every engine option is generated from ``nstyle.options.config``, every input file flag from
``nstyle.io.inputs``. Exit codes: 0 success, 2 bad
input or option (one line on stderr, nothing written at OUTPUT), 1 a failed run,
130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from nstyle.cli.parser import (PROG, Parser, PrintVersions, add_common_options, add_config_options,
                               add_input_options, config_from_args, inputs_from_args)
from nstyle.errors import BadOption, BadOutput, Cancelled, NStyleError, RunFailed
from nstyle.io import gallery
from nstyle.io.console import progress_bar
from nstyle.options.inputs import NO_MASK

if TYPE_CHECKING:  # PyTorch is imported only once a command has work to do (--help and a bad
    # flag answer in a fraction of a second instead of seconds)
    from nstyle.io.inputs import Inputs
from nstyle.options.config import Config


#: option overrides of 'nstyle reconstruct' (the user's flags still win): start from noise,
#: and only the mode's own term
RECONSTRUCT_DEFAULTS = {
    "content": {"style_weight": 0.0, "tv_weight": 0.0, "init": "noise"},
    "style": {"content_weight": 0.0, "tv_weight": 0.0, "init": "noise", "style_weight": 1.0},
}


def _run_and_save(config: Config, inputs: Inputs, output: str, quiet: bool,
                  argv: Sequence[str]) -> None:
    from nstyle.io.images import check_output_path, save_image, save_json, save_progression, to_pil
    from nstyle.io.record import LossHistory, build_record

    out = check_output_path(output)
    save_dir = None
    if config.output.save_every:
        save_dir = Path(config.output.save_dir or out.with_name(out.stem + "_iterations"))
    if config.output.progression:
        check_output_path(config.output.progression, formats=(".png", ".gif"))
    loaded = inputs.load(config)
    from nstyle.core import nnst
    from nstyle.core.stylizer import Stylizer

    stylizer = Stylizer(config)
    # refuses (TooLarge, exit 2) before any work when the run cannot fit in memory
    plan = stylizer.plan(loaded.content, loaded.styles, fine_style=loaded.fine_style,
                         coarse_style=loaded.coarse_style)
    if save_dir is not None:
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadOutput(f"cannot create the --save-dir folder {str(save_dir)!r}: {exc.strerror}") from None

    method_nnst = config.optim.method == "nnst"
    # the plan and the time estimates model the gatys method; nnst has its own schedule
    total = nnst.total_steps(config) if method_nnst else plan.total_iterations
    estimated = None if quiet or method_nnst else _say_estimate(config, plan)
    frames: list = []
    history = LossHistory()
    bar = progress_bar(total, "it", "stylizing", quiet=quiet)
    frame_every = config.output.save_every or max(1, total // 10)

    def on_progress(event) -> None:
        history(event)
        bar.update(1)
        if event.scales > 1 or event.phase != "stylize":
            bar.set_description(f"{event.phase} {event.size}px" if event.phase != "stylize"
                                else f"scale {event.scale}/{event.scales} ({event.size}px)", refresh=False)
        fit_postfix(bar, event.losses)
        if save_dir is not None and event.iteration % config.output.save_every == 0:
            save_image(event.preview(), save_dir / f"iter_{event.iteration:05d}.png")
        if config.output.progression and (event.iteration % frame_every == 0 or event.iteration == 1):
            frames.append(event.preview())

    try:
        result = stylizer.run(loaded.content, loaded.styles, **loaded.run_arguments(),
                              callback=on_progress, plan=plan)
    except RunFailed as exc:
        # the user asked for intermediate saves: keep the last good image with them
        if save_dir is not None and exc.last_good is not None and exc.last_good[0] > 0:
            iteration, image = exc.last_good
            kept = save_image(to_pil(image), save_dir / f"last_good_iter_{iteration:05d}.png")
            raise RunFailed(f"{exc}; the last good image is in {kept}") from None
        raise
    finally:
        bar.close()
    _remember_speed(config, result)
    image = result.to_pil()
    save_image(image, out)
    mixed_style = None
    if result.mixed_style is not None:  # the style actually used, for the user to see
        mixed_style = str(save_image(to_pil(result.mixed_style), mixed_style_path(out)))
    if config.output.progression:
        if result.iterations % frame_every:  # the run ended between two frames
            frames.append(image)
        save_progression(frames, config.output.progression)
    record = build_record(config, result, inputs=inputs.describe(), output=str(out),
                          command=[PROG, *argv], history=history, mixed_style=mixed_style)
    save_json(record, str(out) + ".json")
    if not quiet:
        scales = len(nnst.scale_levels(config.output_size)) + 1 if method_nnst else len(plan.scales)
        guess = f" (estimated {estimated:.0f} s)" if estimated is not None else ""
        peak = "" if method_nnst else f", estimated peak {plan.estimated_peak_gib:.1f} GiB"
        print(f"wrote {out} ({image.width}x{image.height}, {result.iterations} iterations over "
              f"{scales} scale{'s' if scales > 1 else ''}, {result.timings['total']:.1f} s{guess}"
              f"{peak}) and {out}.json"
              + (f"; the mixed style it used: {mixed_style}" if mixed_style else ""), file=sys.stderr)


def mixed_style_path(output: Path) -> Path:
    """Where the scale mixing's style image goes: OUTPUT.mixed-style.png, beside the output
    (lossless whatever the output's format)."""
    return output.with_name(output.name + ".mixed-style.png")


def _say_estimate(config: Config, plan) -> Optional[float]:
    """Prints how long the run should take here, before it starts (measuring this
    computer's speed first, once); returns the seconds, or None when no estimate can be had."""
    from nstyle.core.estimate import describe
    from nstyle.io import speed

    try:
        if speed.known_speed(config) is None:
            print(f"{PROG}: measuring this computer's speed for time estimates (once: a tiny "
                  "run of a few iterations) ...", file=sys.stderr, flush=True)
        seconds = speed.estimate_seconds(config, plan, measure_if_unknown=True)
    except NStyleError:
        return None  # an estimate is a convenience; the run itself will say what is wrong
    out, steps = plan.output, len(plan.steps)
    where = f" over {steps} steps" if steps > 1 else ""
    print(f"{PROG}: {out.width}x{out.height}, {plan.total_iterations} iterations{where}: "
          f"{describe(seconds)} on this computer (from its measured speed)", file=sys.stderr, flush=True)
    return seconds


def _remember_speed(config: Config, result) -> None:
    """This run's timings refine the next estimates."""
    from nstyle.io import speed

    speed.record_run(config, result)


#: columns the progress bar itself keeps on a narrow terminal; the loss read-out goes first
MIN_BAR_COLUMNS = 20


def _terminal_columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size().columns


def fit_postfix(bar, losses: dict[str, float]) -> None:
    """The loss read-out after the bar, as much of it as leaves the bar MIN_BAR_COLUMNS:
    every term, the total alone, or nothing."""
    if bar.disable:
        return
    columns = _terminal_columns()
    full = _loss_summary(losses)
    for text in (full, full.split(" ", 1)[0], ""):
        bar.set_postfix_str(text, refresh=False)
        without_bar = bar.format_meter(**{**bar.format_dict, "ncols": 0})
        if columns - len(without_bar) - 2 >= MIN_BAR_COLUMNS:
            break


def _loss_summary(losses: dict[str, float]) -> str:
    parts = [f"total={losses['total']:.3g}"]
    content = sum(v for k, v in losses.items() if k.startswith("content."))
    style = sum(v for k, v in losses.items() if k.startswith("style."))
    parts += [f"content={content:.3g}", f"style={style:.3g}"]
    if "tv" in losses:
        parts.append(f"tv={losses['tv']:.3g}")
    return " ".join(parts)


# --------------------------------------------------------------------------- commands


def _stylize_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Neural style transfer (Gatys, Ecker & Bethge): repaint "
                "CONTENT in the style of STYLE.", epilog="Other commands: 'nstyle layers', "
                "'nstyle example', 'nstyle reconstruct content|style', 'nstyle explore units|activations|reconstruct', "
                "'nstyle sheet', 'nstyle batch', 'nstyle video', 'nstyle serve', 'nstyle gui' (each has --help); "
                "'nstyle styles' lists the built-in paintings, usable by name wherever a style image goes.",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action=PrintVersions, nargs=0,
                   help="print the versions of nstyle, torch and the weights' source, and exit")
    p.add_argument("content", help="the photo to repaint")
    p.add_argument("styles", nargs="*", metavar="style", help="one or more style images, or "
                   "built-in paintings by name (starry-night; 'nstyle styles' lists them); "
                   "STYLE:MASK confines a style to the white part of a mask image (none are "
                   "needed with --fine-style and --coarse-style)")
    p.add_argument("--style", dest="style_flags", action="append", default=[], metavar="STYLE",
                   help="a style image or built-in painting, as the positional ones (repeatable)")
    add_common_options(p)
    add_input_options(p)
    add_config_options(p)
    return p


def split_style_masks(styles: Sequence[str]) -> tuple[list[str], Optional[list[str]]]:
    """STYLE:MASK arguments -> (styles, masks or None). A ':' belongs to a file name when
    the whole argument is an existing file."""
    paths, masks = [], []
    for arg in styles:
        image, sep, mask = arg.rpartition(":")
        if sep and image and mask and not Path(arg).exists():
            paths.append(image)
            masks.append(mask)
        else:
            paths.append(arg)
            masks.append(NO_MASK)
    if all(m == NO_MASK for m in masks):
        return paths, None
    return paths, masks


def resolve_style(arg: Any) -> Any:
    """A style argument: an existing file stays a path; a built-in painting's name becomes
    its installed file; a word that is neither is refused with the closest painting."""
    if not isinstance(arg, str) or Path(arg).exists():
        return arg
    painting = gallery.find(arg)
    if painting is not None:
        return str(painting.path())
    if gallery.looks_like_a_name(arg):
        hint = gallery.suggest(arg)
        raise BadOption(f"{arg!r} is neither an image file nor a built-in painting"
                        + (f" (did you mean {hint}?)" if hint else "")
                        + f"; '{PROG} styles' lists the paintings")
    return arg  # a missing file: said when the images are opened


def cmd_stylize(argv: Sequence[str]) -> None:
    args = _stylize_parser().parse_args(argv)
    styles, masks = split_style_masks(list(args.styles) + list(args.style_flags))
    styles = [resolve_style(s) for s in styles]
    for name in ("fine_style", "coarse_style"):
        setattr(args, name, resolve_style(getattr(args, name)))
    if masks is not None:
        if args.style_masks is not None:
            raise BadOption("give masks either as STYLE:MASK or with --mask/--style-masks, not both")
        args.style_masks = ",".join(masks)
    inputs = inputs_from_args(args, args.content, styles)
    config = config_from_args(args)
    _run_and_save(config, inputs, args.output, args.quiet, argv)


def cmd_example(argv: Sequence[str]) -> None:
    from nstyle.io.example import EXAMPLE_DEFAULTS, example_images

    p = Parser(prog=f"{PROG} example", description="Stylize the built-in example (scikit-image's "
                "cat photo as Van Gogh's The Starry Night, both installed with nstyle), so a new "
                "install can be tried at once.")
    p.add_argument("-o", "--output", default="example.png", help="output image (default: example.png)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_config_options(p, EXAMPLE_DEFAULTS)
    args = p.parse_args(argv)
    config = config_from_args(args, EXAMPLE_DEFAULTS)
    content, style = example_images()
    inputs = inputs_from_args(args, content, [style])
    _run_and_save(config, inputs, args.output, args.quiet, ["example", *argv])


def cmd_reconstruct(argv: Sequence[str]) -> None:
    p = Parser(prog=f"{PROG} reconstruct", description="The paper's exploration modes: rebuild "
                "an image from white noise using one layer's content representation, or "
                "synthesize a texture from a subset of layers' style representation.")
    sub = p.add_subparsers(dest="mode", required=True, parser_class=Parser)
    pc = sub.add_parser("content", help="content reconstruction from one layer")
    pc.add_argument("image")
    pc.add_argument("--layer", default="relu4_2", help="layer to reconstruct from (default: relu4_2)")
    ps = sub.add_parser("style", help="texture synthesis from a subset of style layers")
    ps.add_argument("image")
    ps.add_argument("--layers", default="relu1_1,relu2_1,relu3_1,relu4_1,relu5_1",
                    help="comma-separated style layers (default: relu1_1,...,relu5_1)")
    for sp, mode in ((pc, "content"), (ps, "style")):
        add_common_options(sp)
        add_config_options(sp, RECONSTRUCT_DEFAULTS[mode])
    args = p.parse_args(argv)
    overrides = dict(RECONSTRUCT_DEFAULTS[args.mode])
    if args.mode == "content":
        overrides["content_layers"] = args.layer
        styles: list[Any] = []
    else:
        overrides["style_layers"] = args.layers
        styles = [args.image]
    inputs = inputs_from_args(args, args.image, styles)
    if inputs.init_image is not None:  # a starting image replaces the mode's noise
        overrides["init"] = "content"
    config = config_from_args(args, overrides)
    _run_and_save(config, inputs, args.output, args.quiet, ["reconstruct", *argv])


def cmd_layers(argv: Sequence[str]) -> None:
    from nstyle.core.vgg import LAYER_NAMES, layer_channels

    p = Parser(prog=f"{PROG} layers", description="List VGG19 layer names usable as content or style layers.")
    p.parse_args(argv)
    for name in LAYER_NAMES:
        print(f"{name:8s} {layer_channels(name):4d} channels")


def cmd_styles(argv: Sequence[str]) -> None:
    p = Parser(prog=f"{PROG} styles", description="List the built-in paintings (public domain, "
                "shipped with nstyle): give a name wherever a style image goes.")
    p.parse_args(argv)
    print(gallery.listing())
    print(f"\nuse one by name: {PROG} photo.jpg starry-night -o out.png  (or --style starry-night)")


def cmd_batch(argv: Sequence[str]) -> None:
    from nstyle.exec import pool
    from nstyle.tasks import batch

    p = Parser(prog=f"{PROG} batch", description="Stylize every CONTENT with every --style "
                "into OUT_DIR (OUT_DIR/<content>__<style>-<tag>.png and its run record), on a pool of "
                "local worker processes or on a Ray cluster. A rerun skips the pairs already "
                "done; OUT_DIR/summary.csv and summary.json say how each pair went. Exit code 1 "
                "if any pair failed.")
    p.add_argument("contents", nargs="+", metavar="CONTENT", help="photos: files, folders "
                   "(their image files) or quoted globs ('photos/**/*.jpg')")
    p.add_argument("--style", dest="batch_styles", action="append", required=True, metavar="S",
                   help="a style image; give it once per style")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder (created if missing)")
    p.add_argument("--format", default="png", choices=("png", "jpg", "webp"), help="output format (default: png)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default: "
                   "one per core, fewer if their memory does not fit; 1 on a GPU)")
    p.add_argument("--threads", type=int, default=None, help="threads per worker or Ray task "
                   "(default: cores / workers locally, 1 on Ray)")
    p.add_argument("--cluster", default=None, metavar="ADDRESS", help="run the pairs as Ray tasks: "
                   "auto, ray://HOST:PORT or local (needs nstyle[cluster])")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no closing line")
    add_config_options(p, skip_sections=("output",))
    args = p.parse_args(argv)
    for name in ("workers", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise BadOption(f"--{name} must be at least 1")
    if args.style_blend_weights is not None:
        raise BadOption("--style-blend-weights: every pair of a batch has one style; nothing to blend")
    if args.cluster is not None:
        from nstyle.exec.ray import check_address, connect, import_ray

        check_address(args.cluster)
        import_ray()  # says how to install it, before any work
        if args.workers is not None:
            raise BadOption("--workers is for the local pool; with --cluster, Ray decides (use --threads)")
    config = config_from_args(args)
    if args.cluster is not None:
        connect(args.cluster)  # an unreachable cluster fails here, before any work
    plan = batch.plan_batch(args.contents, args.batch_styles, args.output, config, args.format,
                            command=[PROG, "batch", *argv])
    try:
        summary = pool.run_batch(plan, workers=args.workers, threads=args.threads,
                                  cluster=args.cluster, progress=not args.quiet)
    except KeyboardInterrupt:
        raise Cancelled(f"interrupted; the finished pairs are kept in {plan.out_dir} (see "
                        "summary.csv): run the same command again to do the rest") from None
    info = summary.info
    if not args.quiet:
        print(f"{info['done']} done, {info['skipped']} skipped (done before), {info['failed']} "
              f"failed of {info['pairs']} pairs in {info['seconds']:.1f} s; summary in "
              f"{plan.out_dir / 'summary.csv'}", file=sys.stderr)
    if summary.failed:
        first = next(r for r in summary.rows if r["state"] == batch.FAILED)
        raise RunFailed(f"{summary.failed} of {info['pairs']} pairs failed (first: {first['pair']}: "
                        f"{first['error']}); see {plan.out_dir / 'summary.csv'}")


def cmd_serve(argv: Sequence[str]) -> None:
    # imported here: the web stack (fastapi, uvicorn) is an extra and slow to import
    from nstyle.service.server import serve

    serve(argv, parser_class=Parser)


def cmd_gui(argv: Sequence[str]) -> None:
    from nstyle.service.server import gui

    gui(argv, parser_class=Parser)


def cmd_explore(argv: Sequence[str]) -> None:
    from nstyle.cli.explore import cmd_explore as explore

    explore(argv)


def cmd_sheet(argv: Sequence[str]) -> None:
    from nstyle.cli.explore import cmd_sheet as sheet

    sheet(argv)


def cmd_video(argv: Sequence[str]) -> None:
    from nstyle.cli.video import cmd_video as video

    video(argv)


COMMANDS = {"reconstruct": cmd_reconstruct, "example": cmd_example, "layers": cmd_layers,
            "styles": cmd_styles, "serve": cmd_serve, "gui": cmd_gui, "explore": cmd_explore,
            "sheet": cmd_sheet, "batch": cmd_batch, "video": cmd_video}


def check_command_word(word: str) -> None:
    """A first argument that is no file but close to a command name was a misspelt
    command ('servee'), not a photo: say so instead of asking for -o."""
    if word.startswith("-") or Path(word).exists() or not gallery.looks_like_a_name(word):
        return
    close = difflib.get_close_matches(word, list(COMMANDS), n=1, cutoff=0.75)
    if close:
        raise BadOption(f"unknown command {word!r}; did you mean '{PROG} {close[0]}'? "
                        f"('{PROG} --help' lists the commands)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code (callable from tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        if argv and command is None:
            check_command_word(argv[0])
        if command is not None:
            command(argv[1:])
        else:
            cmd_stylize(argv)
        return 0
    except NStyleError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was written at the output", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`nstyle styles | head`): not an error
        # Python would complain again flushing stdout at exit: point it at nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for SIGPIPE
    except Exception as exc:  # a bug, not a user error: still one line unless debugging
        if os.environ.get("NSTYLE_DEBUG"):
            raise
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} (set NSTYLE_DEBUG=1 for "
              "the traceback)", file=sys.stderr)
        return 1


def entry_point() -> None:
    sys.exit(main())
