"""The command lines of ``nstyle explore`` and ``nstyle sheet`` (registered in ``cli``).

    nstyle explore units --layer relu3_1 [--channels 0-15] -o units.png
    nstyle explore activations IMAGE --layer relu2_1 [--top 16] -o maps.png
    nstyle explore reconstruct IMAGE [--style PAINTING] -o fig.png
    nstyle sheet CONTENT --style S1 --style S2 [--style-weights 1e4,1e5,1e6] -o sheet.png

Each writes its figure and OUTPUT.json (the run record) atomically; bad input is one
line on stderr and exit code 2, through ``cli.main`` like every other command.
"""

from __future__ import annotations

import sys
from typing import Sequence

from nstyle.tasks import explore, sheet
from nstyle.cli.parser import PROG, Parser, add_common_options, add_config_options, config_from_args
from nstyle.options.config import iter_options
from nstyle.errors import RunFailed
from nstyle.io.console import progress_bar
from nstyle.io.grid import Figure
from nstyle.io.images import check_output_path

#: the few options that mean something when no image is optimized against a loss
UNIT_OPTIONS = ("size", "iterations", "lr", "seed", "pooling", "padding", "device")
ACTIVATION_OPTIONS = ("size", "pooling", "padding", "device")


def _step_bar(quiet: bool, what: str):
    """A tqdm bar over the work's steps, and the callback that moves it."""
    bar = progress_bar(None, "step", what, quiet=quiet)

    def on_step(done: int, total: int) -> None:
        if bar.total != total:
            bar.reset(total=total)
        bar.n = done
        bar.refresh()

    return bar, on_step


def _finish(figure: Figure, output: str, argv: Sequence[str], quiet: bool) -> None:
    out = figure.save(output, command=[PROG, *argv])
    if not quiet:
        w, h = figure.image.size
        print(f"wrote {out} ({w}x{h}, {figure.record['timings']['total']:.1f} s) and {out}.json",
              file=sys.stderr)


def cmd_explore(argv: Sequence[str]) -> None:
    p = Parser(prog=f"{PROG} explore", description="What the network sees, as labelled grids: "
                "images its units respond to, an image's feature maps, and the paper's "
                "figure of content and style reconstructions.")
    sub = p.add_subparsers(dest="what", required=True, parser_class=Parser)
    pu = sub.add_parser("units", help="an image synthesized to excite each channel of a layer")
    pu.add_argument("--layer", required=True, help="e.g. relu3_1 ('nstyle layers' lists them)")
    pu.add_argument("--channels", default="0-15", help="channels and ranges, e.g. 0-15 or "
                    f"3,7,12-14 (at most {explore.MAX_UNITS}; default: 0-15)")
    add_config_options(pu, {"size": 128, "iterations": 120, "lr": 4.0}, only=UNIT_OPTIONS)
    pa = sub.add_parser("activations", help="an image's strongest feature maps at a layer, and "
                        "the patches that excite them most")
    pa.add_argument("image")
    pa.add_argument("--layer", required=True, help="e.g. relu2_1")
    pa.add_argument("--top", type=int, default=16, help="how many channels (default: 16)")
    pa.add_argument("--patch-channels", type=int, default=4, help="of those, how many get a "
                    "row of their strongest patches (default: 4)")
    pa.add_argument("--patches", type=int, default=6, help="patches per such row (default: 6)")
    add_config_options(pa, {"size": 256}, only=ACTIVATION_OPTIONS)
    pr = sub.add_parser("reconstruct", help="the paper's figure: content and style "
                        "reconstructions from conv1_1 ... conv5_1")
    pr.add_argument("image", help="the photo to reconstruct")
    pr.add_argument("--style", dest="style_image", default=None, help="the painting for the "
                    "style row (default: IMAGE)")
    pr.add_argument("--layers", default=",".join(explore.PAPER_LAYERS),
                    help="the layers, in order (default: conv1_1,...,conv5_1)")
    add_config_options(pr, explore.FIGURE_DEFAULTS)
    for sp in (pu, pa, pr):
        add_common_options(sp)
    args = p.parse_args(argv)
    check_output_path(args.output)  # before any work
    bar, on_step = _step_bar(args.quiet, args.what)
    try:
        if args.what == "units":
            config = config_from_args(args, {"size": 128, "iterations": 120, "lr": 4.0})
            figure = explore.units(args.layer, args.channels, config, on_step=on_step)
        elif args.what == "activations":
            config = config_from_args(args, {"size": 256})
            figure = explore.activations(args.image, args.layer, args.top, config,
                                         patch_channels=args.patch_channels, patches=args.patches)
        else:
            config = config_from_args(args, explore.FIGURE_DEFAULTS)
            layers = [name.strip() for name in args.layers.split(",") if name.strip()]
            figure = explore.reconstructions(args.image, config, style_image=args.style_image,
                                             layers=layers, on_step=on_step)
    finally:
        bar.close()
    _finish(figure, args.output, ["explore", *argv], args.quiet)


def cmd_sheet(argv: Sequence[str]) -> None:
    p = Parser(prog=f"{PROG} sheet", description="A contact sheet: CONTENT stylized by each "
                "style (rows) at each style weight (columns), small and fast, to choose from "
                "before a long high-resolution run.")
    p.add_argument("content", help="the photo")
    p.add_argument("--style", dest="styles", action="append", required=True, metavar="STYLE",
                   help=f"a style image; give --style once per row (at most {sheet.MAX_STYLES})")
    p.add_argument("--style-weights", default=",".join(map(sheet.fmt_weight, sheet.DEFAULT_STYLE_WEIGHTS)),
                   help="the columns: comma-separated style weights (default: "
                        f"{','.join(map(sheet.fmt_weight, sheet.DEFAULT_STYLE_WEIGHTS))})")
    p.add_argument("--for-size", type=int, default=sheet.DEFAULT_FOR_SIZE,
                   help="the size of the big run the sheet is for: each cell keeps that run's "
                        f"balance of content and style (default: {sheet.DEFAULT_FOR_SIZE})")
    add_common_options(p)
    excluded = ("style_weight", "style_blend_weights", "save_every", "save_dir", "progression")
    add_config_options(p, sheet.SHEET_DEFAULTS,
                       only=[o.name for o in iter_options() if o.name not in excluded])
    args = p.parse_args(argv)
    weights = sheet.parse_style_weights(args.style_weights)
    config = config_from_args(args, sheet.SHEET_DEFAULTS)
    check_output_path(args.output)
    bar, on_step = _step_bar(args.quiet, "sheet")

    def on_progress(event: sheet.SheetProgress) -> None:
        on_step(event.iteration, event.iterations)
        bar.set_description(f"cell {event.cell}/{event.cells}", refresh=False)

    try:
        figure = sheet.contact_sheet(args.content, args.styles, weights, config,
                                     for_size=args.for_size, callback=on_progress)
    finally:
        bar.close()
    _finish(figure, args.output, ["sheet", *argv], args.quiet)
    failed = [c for c in figure.record["cells"] if "error" in c]
    if failed:  # the sheet is written, with those cells marked: say so, and exit 1
        raise RunFailed(f"{len(failed)} of {len(figure.record['cells'])} cells failed (marked on "
                        f"the sheet); the first: {failed[0]['error']}")
