"""Every knob of a run, in one typed dataclass tree, with defaults and validation.

The CLI flags, the Python keyword options, the HTTP fields and the run record are all
derived from these dataclasses (see ``iter_options``); nothing re-lists them. Each field's
metadata carries its help text, and optionally ``choices`` and ``metavar``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from nstyle.errors import BadOption
from nstyle.options.layers import ALIGN, LAYER_INDEX, PADDING_MODES, check_layer_names, layer_channels

#: documented range of ``size`` (longest side of the output, in pixels)
MIN_SIZE, MAX_SIZE = 32, 8192

OPTIMIZERS = ("lbfgs", "adam", "adagrad", "sgd")
PARAMETERIZATIONS = ("pixels", "pyramid")
#: learning rate used when ``lr`` is not given; the image lives in VGG's 0..255 space
DEFAULT_LR = {"lbfgs": 1.0, "adam": 10.0, "adagrad": 10.0, "sgd": 1.0}
DEVICES = ("auto", "cpu", "cuda", "mps")
#: outputs larger than this are made coarse-to-fine by default (see ``Config.scale_sizes``):
#: the coarse pass lays out the painting's large shapes cheaply, the finer ones add texture
SINGLE_SCALE_MAX = 256
#: ``--schedule`` presets: how scales and iterations are chosen when --scales and
#: --scale-iterations are not given. standard: halve to at most ``SINGLE_SCALE_MAX``; of
#: ``--iterations`` the first of several scales runs ``FIRST_SCALE_SHARE``, the i-th
#: (from 0) 1/2**i, the last at most ``LAST_SCALE_SHARE``; fast: more of the work
#: where an iteration is cheap (a 128 px one costs about 1/16 of a 512 px one), see
#: ``FAST_FIRST_MAX`` and ``FAST_ITERATIONS`` (docs/benchmark.md has the judged figures)
SCHEDULES = ("standard", "fast")
#: the standard schedule's last (output) scale runs at most this share of --iterations:
#: judged blind on the six shared pairs at 512 px (docs/benchmark.md, "The knee"), 30
#: iterations there were tied with the former 50 in 6 of 6 pairs (0.79x the time), while
#: 20 lost 5 of 6 ("hazier", "a grid-like texture in the sky and water"); outputs of three
#: or more scales already had at most this (1024 px: 50 then 25 after the first)
LAST_SCALE_SHARE = 0.3
#: the standard schedule's first scale, when finer ones follow, runs this share of
#: --iterations: judged blind on the six shared pairs at 512 px (docs/benchmark.md, "The
#: first scale"), 70 iterations at 256 px tied with 100 (preferred 1, lost 1, tied 4) at
#: 0.87x the time, and held the same count against pastiche's 500 steps, while 50 lost 3
#: of 6 ("paler", "washed out"); a run of one scale still gets all of --iterations
FIRST_SCALE_SHARE = 0.7
#: the fast schedule halves the output size until it is at most this
FAST_FIRST_MAX = 128
#: the fast schedule's iterations per scale, by the scale's longest side (at most 128 px,
#: at most 256 px, larger), for --iterations 100 (scaled in proportion to it); a run of
#: one scale gets --iterations, as with the standard schedule
FAST_ITERATIONS = ((128, 30), (256, 60), (MAX_SIZE, 20))
#: tile cores are multiples of this (the network's geometry: ``nstyle.options.layers.ALIGN``)
TILE_ALIGN = ALIGN
PRECISIONS = ("auto", "fp32", "bf16")
#: the ``--style-loss`` choices; each is one module of ``nstyle.core.losses`` (its registry
#: holds exactly these names, a test checks it)
STYLE_LOSSES = ("gram", "meancov", "neighbors")
#: ``--preserve-colors`` and ``--color-match`` (``nstyle.core.color`` implements them)
PRESERVE_COLORS = ("none", "luminance", "histogram", "swap")
COLOR_MATCH = ("pca", "cholesky")
#: the most of a style image's side ``--style-margin`` may leave out at each border
MAX_STYLE_MARGIN = 0.2
#: ``--method``: gatys (the optimization this tool is built on) or nnst (Kolkin et al.'s
#: Neural Neighbor Style Transfer, ``nstyle.core.nnst``)
METHODS = ("gatys", "nnst")
#: ``--color-finish``: auto (oklab for nnst, none for gatys), none or oklab
#: (``nstyle.core.color_finish``)
COLOR_FINISHES = ("auto", "none", "oklab")
#: ranges of the numeric options that have no natural bound, so that every value accepted
#: here is one the engine can run: a larger seed overflows torch's generator, an lr past
#: float32 overflows the optimizer, and L-BFGS allocates a list of history_size slots up
#: front (10**8 of them: 0.8 GB under the interpreter lock, before the first iteration)
MAX_SEED = 2**32 - 1
MAX_LR = 1e4
MAX_HISTORY_SIZE = 1000
#: the built-in starting images (a starting image file is an input: ``nstyle.io.inputs``)
INITS = ("content", "noise", "gray")
#: options of records written before input files left the config (``nstyle.io.inputs``)
MOVED_TO_INPUTS = ("style_masks", "keep_mask", "fine_style", "coarse_style")


def option(default: Any, help: str, *, label: str, **meta: Any) -> Any:
    """A dataclass field with its user-facing help text, the label a form shows for it (and
    choices, metavar)."""
    return field(default=default, metadata={"help": help, "label": label, **meta})


def fast_iterations(size: int) -> int:
    """The fast schedule's iterations (for --iterations 100) at a scale of ``size`` px."""
    return next(n for limit, n in FAST_ITERATIONS if size <= limit)


def check_weight(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BadOption(f"{name} must be a finite number >= 0, got {value!r}")


def check_number_in(name: str, value: Any, high: float, what: str = "number") -> None:
    """A real number (not a bool) in 0..``high``, or ``BadOption`` calling it a ``what``."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0 <= value <= high):
        raise BadOption(f"{name} must be a {what} in 0..{high}, got {value!r}")


def _check_weights(name: str, values: Optional[tuple[float, ...]], expected: int,
                   of: str) -> None:
    if values is None:
        return
    for v in values:
        check_weight(name, v)
    if len(values) != expected:
        raise BadOption(f"{name} has {len(values)} values but there are {expected} {of}")
    if expected and sum(values) <= 0:
        raise BadOption(f"{name} must not all be zero")


def default_style_layer_weights(layers) -> list[float]:
    """w_l proportional to 1/N_l² (N_l the layer's channels), summing to 1.

    The paper's equal weights let the deep layers rule: their Gram differences are far
    larger, so relu4_1 takes most of the style loss and its 8-16 px pooled footprint shows
    as a dot grid, while relu1_1 (colour, fine texture) barely moves. 1/N² is the balance
    pastiche's defaults amount to in the paper's units; relu1_1..relu5_1 get
    0.744, 0.186, 0.047, 0.012, 0.012.
    """
    raw = [1.0 / layer_channels(layer) ** 2 for layer in layers]
    return [w / sum(raw) for w in raw]


#: ``--coarse-only-layers`` words (a list option, so they arrive as one-name tuples): auto
#: (None, the default) and none (every layer at every scale, ())
COARSE_ONLY_WORDS = {("auto",): None, ("none",): ()}
#: the default content layers and their weights: relu4_2 holds the photo's structure at
#: every scale; relu3_1, at a tenth of its weight, holds its edges at the last scale, which
#: (``FINE_LAST_SCALE_DEEPEST``) reads nothing deeper. Judged blind on the six shared pairs
#: at 512 px against relu4_2 alone with every layer at every scale: preferred in 5 of 6
#: (docs/quality.md, "The last scale on the fine layers")
DEFAULT_CONTENT_LAYER_WEIGHTS = {"relu4_2": 1.0, "relu3_1": 0.1}
#: ``--coarse-only-layers auto``: the last of several scales leaves out every layer read
#: deeper than this one, when that still leaves it a content and a style layer: the
#: coarser scale has laid out the large shapes, and the network up to relu3_1 costs about
#: 0.4x the whole one (a 512 px fp32 iteration 0.84 s against 2 s)
FINE_LAST_SCALE_DEEPEST = "relu3_1"
#: ``--style-balance`` at most: 1 already lifts a faint painting to the typical energy
#: (Summer Mountains' relu3_1 35x), and past it a fainter painting would outweigh a typical one
MAX_STYLE_BALANCE = 1.0


@dataclass(frozen=True)
class LossOptions:
    content_layers: tuple[str, ...] = option(
        tuple(DEFAULT_CONTENT_LAYER_WEIGHTS),
        "layers whose activations the output must match to keep the content",
        label="Content layers")
    content_layer_weights: Optional[tuple[float, ...]] = option(
        None, "weight of each content layer",
        default_text="relu4_2 1 and relu3_1 0.1 for the default layers, else equal, summing to 1",
        label="Content layer weights")
    style_layers: tuple[str, ...] = option(
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        "layers whose Gram matrices the output must match to take on the style", label="Style layers")
    style_layer_weights: Optional[tuple[float, ...]] = option(
        None, "weight w_l of each style layer",
        default_text="proportional to 1/channels², summing to 1, so early layers count as much "
        "as deep ones", label="Style layer weights")
    coarse_only_layers: Optional[tuple[str, ...]] = option(
        None, "style or content layers left out at the last scale of a coarse-to-fine run and "
        "in a video's later frames (kept at the coarser scales, in a run of one scale and in a "
        "video's first frame), auto or none: a deep layer lays out the painting's large shapes and "
        "holds the photo's, which the coarser scales (or the previous frame) have settled, and "
        "the last scale is where an iteration costs most; the last scale keeps at least one "
        "style layer; not with style_loss neighbors, which matches every style layer at once",
        default_text=f"auto: at the last of several scales, every layer deeper than "
        f"{FINE_LAST_SCALE_DEEPEST} when a content and a style layer remain (so the default "
        f"leaves out relu4_1, relu4_2 and relu5_1: 0.4x the time per iteration there; judged "
        f"better than every layer at every scale), none with style_loss neighbors; a video's "
        f"later frames leave out relu5_1 only", label="Layers at coarse scales only")
    style_loss: str = option(
        "gram", "what the style term matches: gram (the paper's Gram matrices), meancov (each "
        "layer's feature mean and covariance: the 2-Wasserstein distance between Gaussians) or "
        "neighbors (each position's features pulled towards their nearest neighbour among the "
        "style's, matched again at each scale; cannot run tiled)", choices=STYLE_LOSSES,
        label="Style statistics")
    content_weight: float = option(1.0, "alpha: weight of the content loss", label="Content weight")
    style_weight: float = option(1e5, "beta: weight of the style loss", label="Style weight")
    tv_weight: float = option(
        5.0, "weight of the total-variation (smoothness) loss; the default removes the finest "
        "colour speckle without blurring strokes (a few thousandths of the total loss)",
        label="Smoothness weight")
    style_balance: float = option(
        0.0, "per-painting style strength, for faint paintings (washed-out ink, muted tones) "
        "whose style otherwise barely moves the photo: each style layer's weight is multiplied by "
        "(a typical painting's Gram energy / this painting's) ** this, where the painting's is "
        "the lower (the energy: Σ(G/M)²/(4N²) of its style target; typical: the geometric mean "
        f"of the nine built-in paintings at 512 px); 0 = off, at most {MAX_STYLE_BALANCE}; "
        "0.5 boosts Summer Mountains' layers 3-6x and leaves The Starry Night as it is; "
        "style_loss gram only", label="Faint-painting boost")
    balance_size: int = option(
        512, "output size (longest side, px) at which the content, style and tv weights are "
        "defined: at a smaller size the content and tv terms are weighed up to it, so a 128 px "
        "preview keeps about as much of the photo as a 512 px run (bench/balance.py); 0 takes "
        "them as given at every output size (before 2026-12: small outputs came out as pure texture)",
        label="Balance defined at (px)")

    def __post_init__(self) -> None:
        check_layer_names(self.content_layers, "content layer")
        b = self.balance_size
        if not isinstance(b, int) or isinstance(b, bool) or not (b == 0 or MIN_SIZE <= b <= MAX_SIZE):
            raise BadOption(f"balance_size must be 0 or an integer in {MIN_SIZE}..{MAX_SIZE}, got {b!r}")
        check_layer_names(self.style_layers, "style layer")
        self._check_coarse_only_layers()
        if self.style_loss not in STYLE_LOSSES:
            raise BadOption(f"style_loss must be one of {', '.join(STYLE_LOSSES)}, got {self.style_loss!r}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            check_weight(name, getattr(self, name))
        check_number_in("style_balance", self.style_balance, MAX_STYLE_BALANCE)
        _check_weights("content_layer_weights", self.content_layer_weights,
                       len(self.content_layers), "content layers")
        _check_weights("style_layer_weights", self.style_layer_weights,
                       len(self.style_layers), "style layers")
        if not self.content_layers and self.content_weight > 0:
            raise BadOption("content_layers is empty but content_weight > 0")
        if not self.style_layers and self.style_weight > 0:
            raise BadOption("style_layers is empty but style_weight > 0")
        if self.content_weight == 0 and self.style_weight == 0 and self.tv_weight == 0:
            raise BadOption("content_weight, style_weight and tv_weight are all 0: nothing to optimize")

    def _check_coarse_only_layers(self) -> None:
        if self.coarse_only_layers in COARSE_ONLY_WORDS:  # the words, as the value they name
            object.__setattr__(self, "coarse_only_layers", COARSE_ONLY_WORDS[self.coarse_only_layers])
        if self.coarse_only_layers is None:
            return
        check_layer_names(self.coarse_only_layers, "coarse-only layer")
        read = (*self.style_layers, *self.content_layers)
        stray = [layer for layer in self.coarse_only_layers if layer not in read]
        if stray:
            raise BadOption(f"coarse_only_layers names {stray[0]}, which is not one of the style "
                            f"or content layers ({', '.join(dict.fromkeys(read))})")
        if self.style_layers and set(self.style_layers) <= set(self.coarse_only_layers):
            raise BadOption("coarse_only_layers names every style layer: the last scale would "
                            "have no style term")

    @property
    def explicit_coarse_only_layers(self) -> tuple[str, ...]:
        """The layers ``--coarse-only-layers`` names (auto names none)."""
        return self.coarse_only_layers or ()

    def last_scale_left_out(self, separable: bool) -> tuple[str, ...]:
        """The layers the last of several scales leaves out: those named, or with 'auto'
        those deeper than ``FINE_LAST_SCALE_DEEPEST`` (none when the style loss is not
        ``separable``, or when no content or no style layer would remain)."""
        if self.coarse_only_layers is not None:
            return self.explicit_coarse_only_layers
        deepest = LAYER_INDEX[FINE_LAST_SCALE_DEEPEST]
        read = dict.fromkeys((*self.style_layers, *self.content_layers))
        deep = tuple(layer for layer in read if LAYER_INDEX[layer] > deepest)
        keeps_style = any(layer not in deep for layer in self.style_layers)
        keeps_content = self.content_weight == 0 or any(layer not in deep for layer in self.content_layers)
        return deep if separable and keeps_style and keeps_content else ()

    def layer_weights(self, kind: str) -> dict[str, float]:
        """{layer: weight} for ``kind`` 'content' or 'style', defaults filled in."""
        layers = getattr(self, f"{kind}_layers")
        weights = getattr(self, f"{kind}_layer_weights")
        if weights is None and kind == "style":
            weights = default_style_layer_weights(layers)
        elif weights is None and tuple(layers) == tuple(DEFAULT_CONTENT_LAYER_WEIGHTS):
            weights = list(DEFAULT_CONTENT_LAYER_WEIGHTS.values())
        elif weights is None:
            weights = [1.0 / len(layers)] * len(layers)
        merged: dict[str, float] = {}
        for layer, w in zip(layers, weights):  # a layer named twice counts twice
            merged[layer] = merged.get(layer, 0.0) + float(w)
        return merged


@dataclass(frozen=True)
class ImageOptions:
    size: int = option(512, f"longest side of the output in pixels ({MIN_SIZE}..{MAX_SIZE})",
                       label="Output size")
    style_scale: float = option(
        1.0, "size of the style images relative to --size (0.1..4): the painting's strokes and "
        "shapes keep their size in its pixels, so larger = larger brush strokes and shapes, "
        "smaller = smaller ones", label="Style scale")
    style_blend_weights: Optional[tuple[float, ...]] = option(
        None, "weight of each style image when several are given", default_text="equal",
        label="Style blend weights")
    style_margin: float = option(
        0.04, f"fraction of each style image's width and height (0..{MAX_STYLE_MARGIN}) left out "
        "along every border before its style is taken: a scan of a painting often carries its "
        "canvas edge, frame or a strip of another colour there, and the network, which sees "
        "where an image ends, paints that strip back along the output's edges; 0 keeps the "
        "whole painting",
        label="Style border left out")
    init: str = option(
        "content", "where the optimization starts: content (the photo), noise (white noise) "
        "or gray (the ImageNet mean colour), unless a starting image is given",
        choices=INITS, label="Start from")
    seed: int = option(0, f"random seed (0..{MAX_SEED}); the same seed and options give the "
                       "same output", label="Random seed")

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise BadOption(f"size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {self.size!r}")
        if not (isinstance(self.style_scale, (int, float)) and math.isfinite(self.style_scale)
                and 0.1 <= self.style_scale <= 4.0):
            raise BadOption(f"style_scale must be in 0.1..4, got {self.style_scale!r}")
        check_number_in("style_margin", self.style_margin, MAX_STYLE_MARGIN, "fraction")
        if self.style_blend_weights is not None:
            for v in self.style_blend_weights:
                check_weight("style_blend_weights", v)
            if sum(self.style_blend_weights) <= 0:
                raise BadOption("style_blend_weights must not all be zero")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise BadOption(f"seed must be an integer in 0..{MAX_SEED}, got {self.seed!r}")
        if self.init not in INITS:
            raise BadOption(f"init must be one of {', '.join(INITS)}, got {self.init!r} (a "
                            "starting image is an input: init_image)")


@dataclass(frozen=True)
class OptimOptions:
    method: str = option(
        "gatys", "gatys (Gram matrices and a content loss, L-BFGS, the options below) or nnst "
        "(Neural Neighbor Style Transfer, Kolkin et al. 2022: each position's VGG hypercolumn "
        "replaced by its nearest neighbour in the painting, Adam on a Laplacian pyramid from 64 "
        "px up; no content loss; slow on a CPU, see docs/quality.md)", choices=METHODS,
        label="Method")
    style_rotations: int = option(
        4, "nnst: 4 matches against the painting and its copies turned by 90, 180 and 270 "
        "degrees (more strokes to choose from; 4x the matching work), 1 against the painting alone",
        label="Painting rotations (nnst)")
    optimizer: str = option("lbfgs", "optimization algorithm", choices=OPTIMIZERS, label="Optimizer")
    parameterization: str = option(
        "pyramid", "gatys: what the optimizer moves: pyramid (the levels of a Laplacian pyramid "
        "of the image, every level at once: steps favour large shapes over pixel-level grain) "
        "or pixels (the paper's, the default before 2026-12-07)", choices=PARAMETERIZATIONS,
        label="Parameterization")
    iterations: int = option(
        100, "optimizer iterations of a run at one scale; of several scales the first "
        "(coarsest) runs 70% of these, the second half, the third a quarter..., the last at "
        "most 30% (see --schedule, --scale-iterations)",
        label="Iterations")
    lr: Optional[float] = option(
        None, f"learning rate / step size, at most {MAX_LR:g}; the gradient is scaled so its "
        "first mean magnitude is one pixel level", default_text="lbfgs 1, adam 10, adagrad 10, sgd 1",
        label="Step size")
    beta1: float = option(0.9, "Adam's beta1", label="Adam beta 1")
    beta2: float = option(0.999, "Adam's beta2", label="Adam beta 2")
    eps: float = option(1e-8, "Adam's epsilon", label="Adam epsilon")
    history_size: int = option(100, f"L-BFGS history size (1..{MAX_HISTORY_SIZE})", label="L-BFGS memory")
    tolerance: float = option(
        0.25, "end a scale early once the image has stopped changing: the mean absolute pixel "
        "change per iteration (0..255 levels, averaged over 5 iterations) is below this; 0 "
        "runs every iteration", label="Stop when changes fall below")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadOption(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.style_rotations not in (1, 4) or isinstance(self.style_rotations, bool):
            raise BadOption(f"style_rotations must be 1 or 4, got {self.style_rotations!r}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise BadOption(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                            f"got {self.parameterization!r}")
        if self.optimizer not in OPTIMIZERS:
            raise BadOption(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise BadOption(f"iterations must be an integer >= 1, got {self.iterations!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and 0 < self.lr <= MAX_LR):
            raise BadOption(f"lr must be a number > 0 and <= {MAX_LR:g}, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v < 1):
                raise BadOption(f"{name} must be in [0, 1), got {v!r}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise BadOption(f"eps must be a finite number > 0, got {self.eps!r}")
        if not isinstance(self.history_size, int) or not 1 <= self.history_size <= MAX_HISTORY_SIZE:
            raise BadOption(f"history_size must be an integer in 1..{MAX_HISTORY_SIZE}, "
                            f"got {self.history_size!r}")
        check_weight("tolerance", self.tolerance)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


@dataclass(frozen=True)
class ModelOptions:
    pooling: str = option("avg", "VGG pooling: avg (the paper's choice for image synthesis: "
                          "smoother gradients, the painting's palette and large shapes carry "
                          "over) or max (the network as trained)", choices=("max", "avg"), label="Pooling")
    padding: str = option(
        "reflect", "how every VGG convolution pads the border: zeros (the original network), "
        "reflect or replicate (no dark/pale frame for the style loss to fight, so no bands "
        "along the image edges)", choices=PADDING_MODES, label="Border padding")
    device: str = option("auto", "where to run: auto picks cuda, then mps, then cpu",
                         choices=DEVICES, label="Device")
    precision: str = option(
        "auto", "arithmetic of the VGG network in the optimization loop: fp32; bf16 (bfloat16 "
        "network, losses accumulated in float32: about 2x faster per iteration where the "
        "hardware has bfloat16 units, a little less progress per iteration); auto: bf16 on "
        "CPUs with AMX or AVX512-BF16 and on CUDA GPUs that support it, else fp32 (with --method "
        "nnst, auto is fp32, as it was judged, and bf16 runs its network in bfloat16)",
        choices=PRECISIONS, label="Precision")

    def __post_init__(self) -> None:
        if self.pooling not in ("max", "avg"):
            raise BadOption(f"pooling must be max or avg, got {self.pooling!r}")
        if self.padding not in PADDING_MODES:
            raise BadOption(f"padding must be one of {', '.join(PADDING_MODES)}, got {self.padding!r}")
        if self.device not in DEVICES:
            raise BadOption(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise BadOption(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class OutputOptions:
    save_every: int = option(0, "save the image every N iterations (0: never)", label="Save every")
    save_dir: Optional[str] = option(
        None, "folder for --save-every images", default_text="OUTPUT's name + '_iterations'",
        metavar="DIR", label="Save folder")
    progression: Optional[str] = option(
        None, "write the run's progress as one strip (.png) or animation (.gif): the first "
        "iteration, then every --save-every iterations (10 frames if that is 0), then the end",
        metavar="FILE", label="Progression picture")

    def __post_init__(self) -> None:
        if not isinstance(self.save_every, int) or self.save_every < 0:
            raise BadOption(f"save_every must be an integer >= 0, got {self.save_every!r}")
        if self.progression is not None and not self.progression.lower().endswith((".png", ".gif")):
            raise BadOption(f"progression must end in .png (a strip) or .gif (an animation), "
                            f"got {self.progression!r}")


@dataclass(frozen=True)
class ColorOptions:
    preserve_colors: str = option(
        "none", "keep the content photo's colours: luminance (stylize the luminance only, "
        "then put back the photo's chroma: the paper's method), histogram (first recolour the "
        "style images to the photo's colour mean and covariance), swap (the photo's chroma "
        "under the finished image's luminance, for comparison) or none", choices=PRESERVE_COLORS,
        label="Keep the photo's colours")
    color_match: str = option(
        "pca", "colour map of --preserve-colors histogram: pca (symmetric square roots, as in "
        "Image Analogies) or cholesky", choices=COLOR_MATCH, label="Colour matching")
    color_finish: str = option(
        "auto", "a last colour step: oklab (in OkLab, the output's lightness kept within the "
        "painting's range, the photo's colours mapped to the painting's colour mean and "
        "covariance, smoothed along the lightness edges: NNST's colour correction), none, or "
        "auto (oklab with --method nnst, none otherwise)", choices=COLOR_FINISHES,
        label="Colour finish")

    def __post_init__(self) -> None:
        if self.color_finish not in COLOR_FINISHES:
            raise BadOption(f"color_finish must be one of {', '.join(COLOR_FINISHES)}, got {self.color_finish!r}")
        if self.color_finish == "oklab" and self.preserve_colors != "none":
            raise BadOption("color_finish oklab gives the painting's palette and preserve_colors "
                            "keeps the photo's: choose one")
        if self.preserve_colors not in PRESERVE_COLORS:
            raise BadOption(f"preserve_colors must be one of {', '.join(PRESERVE_COLORS)}, "
                            f"got {self.preserve_colors!r}")
        if self.color_match not in COLOR_MATCH:
            raise BadOption(f"color_match must be one of {', '.join(COLOR_MATCH)}, got {self.color_match!r}")


@dataclass(frozen=True)
class ScaleOptions:
    scales: Optional[tuple[int, ...]] = option(
        None, "coarse-to-fine sizes, smallest first (e.g. 256,512,1024): each result, "
        "upsampled, starts the next; the last is the output size and overrides --size",
        metavar="S1,S2,...", default_text=f"--size halved until it is at most {SINGLE_SCALE_MAX} "
        f"(512 runs 256,512), so one scale up to {SINGLE_SCALE_MAX} px; --schedule fast: "
        f"{FAST_FIRST_MAX} (512 runs 128,256,512)", label="Sizes, coarse to fine")
    scale_iterations: Optional[tuple[int, ...]] = option(
        None, "iterations at each scale, one value for all or one per scale",
        metavar="N1,N2,...", default_text="of --iterations: 70% at the first of several "
        "scales, half at the second, a quarter at the third..., the last at most 30%",
        label="Iterations per size")
    schedule: str = option(
        "standard", "coarse-to-fine preset, when --scales/--scale-iterations are not given: "
        "standard (--size halved until at most 256 px; of --iterations, 70% at the first "
        "scale, half at the second, the last at most 30%: 70 and 30 at 512 px, 70, 50 and 25 "
        "at 1024 px) or "
        "fast (halved until at most 128 px; per 100 --iterations, 30 at scales up to 128 px, "
        "60 up to 256 px, 20 above: less time, softer detail; judged worse)",
        choices=SCHEDULES, label="Schedule")
    fine_layers: tuple[str, ...] = option(
        ("relu1_1", "relu2_1"), "layers whose Gram matrices carry the fine style's texture "
        "into the mixed style image (starting from the coarse style)", label="Fine-texture layers")
    mix_iterations: int = option(100, "iterations that synthesize the mixed style image",
                                 label="Mixing iterations")

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise BadOption(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.scales is not None:
            if not self.scales:
                raise BadOption("scales is empty; give sizes such as 256,512,1024")
            for s in self.scales:
                if not isinstance(s, int) or not MIN_SIZE <= s <= MAX_SIZE:
                    raise BadOption(f"scales must be integers in {MIN_SIZE}..{MAX_SIZE}, got {s!r}")
            if any(b <= a for a, b in zip(self.scales, self.scales[1:])):
                raise BadOption(f"scales must grow, smallest first, got {','.join(map(str, self.scales))}")
        for n in self.scale_iterations or ():
            if not isinstance(n, int) or n < 1:
                raise BadOption(f"scale_iterations must be integers >= 1, got {n!r}")
        if self.scale_iterations is not None and not self.scale_iterations:
            raise BadOption("scale_iterations is empty")
        check_layer_names(self.fine_layers, "fine layer")
        if not self.fine_layers:
            raise BadOption("fine_layers is empty")
        if not isinstance(self.mix_iterations, int) or self.mix_iterations < 1:
            raise BadOption(f"mix_iterations must be an integer >= 1, got {self.mix_iterations!r}")


@dataclass(frozen=True)
class MemoryOptions:
    tile_size: Optional[int] = option(
        None, f"run the network on tiles of this many pixels (a multiple of {TILE_ALIGN}, "
        ">= 64; the result is the same, memory is bounded); 0 never tiles",
        default_text="tiles only when one pass over the whole image would not fit in memory",
        label="Tile size")
    memory_limit: Optional[float] = option(
        None, "GiB the run may use; a run estimated to need more is refused before it starts",
        default_text="the memory available when it starts", label="Memory limit")

    def __post_init__(self) -> None:
        t = self.tile_size
        if t is not None and not (isinstance(t, int) and (t == 0 or (t >= 64 and t % TILE_ALIGN == 0))):
            raise BadOption(f"tile_size must be 0 or a multiple of {TILE_ALIGN} >= 64, got {t!r}")
        m = self.memory_limit
        if m is not None and not (isinstance(m, (int, float)) and math.isfinite(m) and m > 0):
            raise BadOption(f"memory_limit must be a number of GiB > 0, got {m!r}")


@dataclass(frozen=True)
class Config:
    """The whole configuration of one run."""

    loss: LossOptions = field(default_factory=LossOptions)
    image: ImageOptions = field(default_factory=ImageOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    color: ColorOptions = field(default_factory=ColorOptions)
    scale: ScaleOptions = field(default_factory=ScaleOptions)
    memory: MemoryOptions = field(default_factory=MemoryOptions)

    def __post_init__(self) -> None:
        sizes = self.scale_sizes
        counts = self.scale.scale_iterations
        if self.optim.method == "nnst" and counts is not None and len(counts) != 1:
            raise BadOption("with --method nnst, scale_iterations is one number: the Adam steps "
                            "of every scale and of the final pass (default 200)")
        if self.optim.method == "nnst" and self.loss.style_balance:
            raise BadOption("--method nnst does not support style_balance (it weighs Gram layers); "
                            "use --method gatys")
        if self.optim.method == "nnst" and self.color.preserve_colors != "none":
            raise BadOption("--method nnst does not keep the photo's colours (preserve_colors); "
                            "use --color-finish none to keep the optimized colours")
        if counts is not None and len(counts) not in (1, len(sizes)):
            raise BadOption(f"scale_iterations has {len(counts)} values for {len(sizes)} scales "
                            f"({','.join(map(str, sizes))}); give one value or one per scale")

    # ---- the coarse-to-fine schedule -------------------------------------------------

    @property
    def scale_sizes(self) -> tuple[int, ...]:
        """Output sizes of the coarse-to-fine pyramid, smallest first; the last is the output's."""
        if self.scale.scales is not None:
            return self.scale.scales
        sizes = [self.image.size]
        first_max = FAST_FIRST_MAX if self.scale.schedule == "fast" else SINGLE_SCALE_MAX
        while sizes[0] > first_max:
            sizes.insert(0, max(MIN_SIZE, round(sizes[0] / 2)))
        return tuple(sizes)

    @property
    def color_finish(self) -> str:
        """The colour finish this run applies ('auto' resolved): oklab or none."""
        finish = self.color.color_finish
        if finish == "auto":
            return "oklab" if self.optim.method == "nnst" else "none"
        return finish

    @property
    def output_size(self) -> int:
        return self.scale_sizes[-1]

    @property
    def scale_iteration_counts(self) -> tuple[int, ...]:
        """Iterations at each scale. By default, of --iterations: the first of several
        scales ``FIRST_SCALE_SHARE``, the i-th (from 0) 1/2**i (finer scales start close),
        the last at most ``LAST_SCALE_SHARE``; a run of one scale all of them."""
        sizes = self.scale_sizes
        counts = self.scale.scale_iterations
        if counts is None:
            n = self.optim.iterations
            if self.scale.schedule == "fast" and len(sizes) > 1:
                return tuple(max(1, round(fast_iterations(size) * n / 100)) for size in sizes)
            if len(sizes) == 1:
                return (n,)
            counts = [max(1, n >> i) for i in range(len(sizes))]
            counts[0] = max(1, round(n * FIRST_SCALE_SHARE))
            counts[-1] = min(counts[-1], max(1, round(n * LAST_SCALE_SHARE)))
            return tuple(counts)
        if len(counts) == 1:
            return counts * len(sizes)
        return counts

    # ---- derived views ---------------------------------------------------------------

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (JSON-ready: tuples become lists)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_options(cls, base: Optional["Config"] = None, **options: Any) -> "Config":
        """Build a config from flat option names (``style_weight=1e5, iterations=200``)."""
        base = base or cls()
        known = {opt.name: opt for opt in iter_options()}
        per_section: dict[str, dict[str, Any]] = {}
        for name, value in options.items():
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise BadOption(f"unknown option {name!r}{hint}")
            opt = known[name]
            per_section.setdefault(opt.section, {})[name] = coerce(opt, value)
        sections = {
            section: dataclasses.replace(getattr(base, section), **values)
            for section, values in per_section.items()
        }
        return dataclasses.replace(base, **sections)

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> "Config":
        """Inverse of ``to_dict`` (e.g. to repeat a run from its record)."""
        flat = {k: v for section in data.values() for k, v in section.items()
                if k not in MOVED_TO_INPUTS}
        if flat.get("init") not in (None, *INITS):  # an init path, from before inputs.py
            flat.pop("init")
        return cls.from_options(**flat)


@dataclass(frozen=True)
class OptionInfo:
    section: str
    name: str
    type: Any  # the resolved annotation
    default: Any
    help: str
    choices: Optional[tuple[str, ...]]
    metavar: Optional[str]
    #: what --help shows as the default when it is None (else "auto")
    default_text: Optional[str] = None
    #: further command-line spellings of the flag
    aliases: tuple[str, ...] = ()
    #: what a form (the service's page) calls it
    label: str = ""

    @property
    def base_type(self) -> type:
        """float for tuple[float, ...] and Optional[float], etc."""
        t = self.type
        if typing.get_origin(t) is typing.Union:
            t = next(a for a in typing.get_args(t) if a is not type(None))
        if typing.get_origin(t) is tuple:
            return typing.get_args(t)[0]
        return t

    @property
    def is_list(self) -> bool:
        t = self.type
        if typing.get_origin(t) is typing.Union:
            t = next(a for a in typing.get_args(t) if a is not type(None))
        return typing.get_origin(t) is tuple


def iter_options() -> Iterator[OptionInfo]:
    """Every option of ``Config``, in declaration order."""
    for section in dataclasses.fields(Config):
        cls = section.default_factory  # type: ignore[misc]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield OptionInfo(section.name, f.name, hints[f.name], f.default,
                             f.metadata["help"], f.metadata.get("choices"), f.metadata.get("metavar"),
                             f.metadata.get("default_text"), tuple(f.metadata.get("aliases", ())),
                             f.metadata["label"])


def coerce(opt: OptionInfo, value: Any) -> Any:
    """Convert a user value (string from argv/HTTP, or a Python value) to the option's type."""
    if value is None:
        return None
    base = opt.base_type
    try:
        if opt.is_list:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(_scalar(base, v) for v in value)
        return _scalar(base, value)
    except (TypeError, ValueError) as exc:
        kind = f"list of {base.__name__}" if opt.is_list else base.__name__
        raise BadOption(f"{opt.name}: expected {kind}, got {value!r}") from exc


def _scalar(base: type, value: Any) -> Any:
    if base is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(value)
        return int(value)
    if base is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    raise TypeError(base)


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
