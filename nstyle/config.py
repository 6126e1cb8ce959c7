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

from .errors import BadOption
from .vgg import check_layer_names

#: documented range of ``size`` (longest side of the output, in pixels)
MIN_SIZE, MAX_SIZE = 32, 8192

OPTIMIZERS = ("lbfgs", "adam", "adagrad", "sgd")
#: learning rate used when ``lr`` is not given; the image lives in VGG's 0..255 space
DEFAULT_LR = {"lbfgs": 1.0, "adam": 10.0, "adagrad": 10.0, "sgd": 1.0}
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")


def option(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with its user-facing help text (and choices, metavar)."""
    return field(default=default, metadata={"help": help, **meta})


def _check_weight(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BadOption(f"{name} must be a finite number >= 0, got {value!r}")


def _check_weights(name: str, values: Optional[tuple[float, ...]], expected: int,
                   of: str) -> None:
    if values is None:
        return
    for v in values:
        _check_weight(name, v)
    if len(values) != expected:
        raise BadOption(f"{name} has {len(values)} values but there are {expected} {of}")
    if expected and sum(values) <= 0:
        raise BadOption(f"{name} must not all be zero")


@dataclass(frozen=True)
class LossOptions:
    content_layers: tuple[str, ...] = option(
        ("relu4_2",), "layers whose activations the output must match to keep the content")
    content_layer_weights: Optional[tuple[float, ...]] = option(
        None, "weight of each content layer (default: equal, summing to 1)")
    style_layers: tuple[str, ...] = option(
        ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        "layers whose Gram matrices the output must match to take on the style")
    style_layer_weights: Optional[tuple[float, ...]] = option(
        None, "weight w_l of each style layer (default: equal, summing to 1)")
    content_weight: float = option(1.0, "alpha: weight of the content loss")
    style_weight: float = option(1e4, "beta: weight of the style loss")
    tv_weight: float = option(1e-3, "weight of the total-variation (smoothness) loss")

    def __post_init__(self) -> None:
        check_layer_names(self.content_layers, "content layer")
        check_layer_names(self.style_layers, "style layer")
        for name in ("content_weight", "style_weight", "tv_weight"):
            _check_weight(name, getattr(self, name))
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

    def layer_weights(self, kind: str) -> dict[str, float]:
        """{layer: weight} for ``kind`` 'content' or 'style', defaults filled in."""
        layers = getattr(self, f"{kind}_layers")
        weights = getattr(self, f"{kind}_layer_weights")
        if weights is None:
            weights = [1.0 / len(layers)] * len(layers)
        merged: dict[str, float] = {}
        for layer, w in zip(layers, weights):  # a layer named twice counts twice
            merged[layer] = merged.get(layer, 0.0) + float(w)
        return merged


@dataclass(frozen=True)
class ImageOptions:
    size: int = option(512, f"longest side of the output in pixels ({MIN_SIZE}..{MAX_SIZE})")
    style_scale: float = option(
        1.0, "size of the style images relative to --size (0.1..4; smaller = larger brush strokes)")
    style_blend_weights: Optional[tuple[float, ...]] = option(
        None, "weight of each style image when several are given (default: equal)")
    init: str = option(
        "content", "starting image: content, noise (white noise), gray (the ImageNet mean "
        "colour) or the path of an image", metavar="content|noise|gray|PATH")
    seed: int = option(0, "random seed; the same seed and options give the same output")

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise BadOption(f"size must be an integer in {MIN_SIZE}..{MAX_SIZE}, got {self.size!r}")
        if not (isinstance(self.style_scale, (int, float)) and math.isfinite(self.style_scale)
                and 0.1 <= self.style_scale <= 4.0):
            raise BadOption(f"style_scale must be in 0.1..4, got {self.style_scale!r}")
        if self.style_blend_weights is not None:
            for v in self.style_blend_weights:
                _check_weight("style_blend_weights", v)
            if sum(self.style_blend_weights) <= 0:
                raise BadOption("style_blend_weights must not all be zero")
        if not isinstance(self.init, str) or not self.init:
            raise BadOption("init must be content, noise, gray or the path of an image")


@dataclass(frozen=True)
class OptimOptions:
    optimizer: str = option("lbfgs", "optimization algorithm", choices=OPTIMIZERS)
    iterations: int = option(500, "number of optimizer iterations (>= 1)")
    lr: Optional[float] = option(
        None, "learning rate / step size (default: lbfgs 1, adam 10, adagrad 10, sgd 1; the gradient is normalized so that its first mean magnitude is one pixel level)")
    beta1: float = option(0.9, "Adam's beta1")
    beta2: float = option(0.999, "Adam's beta2")
    eps: float = option(1e-8, "Adam's epsilon")
    history_size: int = option(100, "L-BFGS history size")

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise BadOption(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise BadOption(f"iterations must be an integer >= 1, got {self.iterations!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise BadOption(f"lr must be a finite number > 0, got {self.lr!r}")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v < 1):
                raise BadOption(f"{name} must be in [0, 1), got {v!r}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise BadOption(f"eps must be a finite number > 0, got {self.eps!r}")
        if not isinstance(self.history_size, int) or self.history_size < 1:
            raise BadOption(f"history_size must be an integer >= 1, got {self.history_size!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


@dataclass(frozen=True)
class ModelOptions:
    pooling: str = option("max", "VGG pooling: max (the original) or avg (the paper's "
                          "choice for image synthesis: smoother gradients)", choices=("max", "avg"))
    device: str = option("auto", "where to run: auto picks cuda, then mps, then cpu",
                         choices=DEVICES)
    precision: str = option(
        "auto", "arithmetic of the VGG network in the optimization loop: fp32; bf16 (bfloat16 "
        "network, losses accumulated in float32: about 2x faster per iteration where the "
        "hardware has bfloat16 units, a little less progress per iteration); auto: bf16 on "
        "CPUs with AMX or AVX512-BF16 and on CUDA GPUs that support it, else fp32",
        choices=PRECISIONS)

    def __post_init__(self) -> None:
        if self.pooling not in ("max", "avg"):
            raise BadOption(f"pooling must be max or avg, got {self.pooling!r}")
        if self.device not in DEVICES:
            raise BadOption(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise BadOption(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass(frozen=True)
class OutputOptions:
    save_every: int = option(0, "save the image every N iterations (0: never)")
    save_dir: Optional[str] = option(
        None, "folder for --save-every images (default: OUTPUT's name + '_iterations')")
    progression: Optional[str] = option(
        None, "write the run's progress as one strip (.png) or animation (.gif): the first "
        "iteration, then every --save-every iterations (10 frames if that is 0), then the end")

    def __post_init__(self) -> None:
        if not isinstance(self.save_every, int) or self.save_every < 0:
            raise BadOption(f"save_every must be an integer >= 0, got {self.save_every!r}")
        if self.progression is not None and not self.progression.lower().endswith((".png", ".gif")):
            raise BadOption(f"progression must end in .png (a strip) or .gif (an animation), "
                            f"got {self.progression!r}")


@dataclass(frozen=True)
class Config:
    """The whole configuration of one run."""

    loss: LossOptions = field(default_factory=LossOptions)
    image: ImageOptions = field(default_factory=ImageOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    output: OutputOptions = field(default_factory=OutputOptions)

    # ---- derived views ---------------------------------------------------------------

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict (JSON-ready: tuples become lists)."""
        return json_ready(dataclasses.asdict(self))

    def flat(self) -> dict[str, Any]:
        """{option name: value} over every section."""
        return {opt.name: getattr(getattr(self, opt.section), opt.name) for opt in iter_options()}

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
        flat = {k: v for section in data.values() for k, v in section.items()}
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
                             f.metadata["help"], f.metadata.get("choices"), f.metadata.get("metavar"))


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
