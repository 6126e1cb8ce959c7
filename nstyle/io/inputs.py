"""What a run works on: its images, kept apart from the knobs in ``config``.

    inputs = Inputs("photo.jpg", ["sky.jpg", "ground.jpg"], style_masks=["sky.png", None],
                    keep_mask=face_array, init_image=pil_image)
    tensors = inputs.load(config)            # checked and decoded: what Stylizer.run takes

Every image may be a path, a PIL image or a NumPy array. Only the front end that received
an input opens it: the CLI fills ``Inputs`` with the paths on its command line, the Python
API with whatever the caller passed, the service with images decoded from uploads only,
and it loads them with ``allow_paths=False``, so a string that reached a server can never
make it open a file (see docs/service.md).

``INPUT_FIELDS`` describes each input once (help, how many, mask or image); the CLI's flags
and the service's upload fields are generated from it, like options from ``config``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from nstyle.options.config import INITS, Config
from nstyle.errors import BadImage, BadOption
from nstyle.options.inputs import FILE_FIELDS, NO_MASK
from nstyle.io.images import ImageSource, load_image, load_mask, to_tensor


@dataclass
class LoadedInputs:
    """The decoded inputs of a run, as the tensors ``Stylizer.run`` takes."""

    content: torch.Tensor
    styles: list[torch.Tensor]
    init_image: Optional[torch.Tensor] = None
    style_masks: Optional[list[Optional[torch.Tensor]]] = None
    keep_mask: Optional[torch.Tensor] = None
    fine_style: Optional[torch.Tensor] = None
    coarse_style: Optional[torch.Tensor] = None

    def run_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``Stylizer.run`` (besides content and styles)."""
        return {"init_image": self.init_image, "style_masks": self.style_masks,
                "keep_mask": self.keep_mask, "fine_style": self.fine_style,
                "coarse_style": self.coarse_style}

    def style_shapes(self) -> list[tuple[int, int]]:
        """(height, width) of every image a style target is made from (for memory plans)."""
        extra = [self.coarse_style] if self.coarse_style is not None else []
        return [tuple(s.shape[-2:]) for s in [*self.styles, *extra]]  # type: ignore[misc]


@dataclass
class Inputs:
    """The images of one run, as given (paths, PIL images or arrays); nothing is opened
    until ``load``."""

    content: ImageSource
    styles: list[ImageSource] = field(default_factory=list)
    style_masks: Optional[list[Optional[ImageSource]]] = None  # None or 'none': no mask
    keep_mask: Optional[ImageSource] = None
    init_image: Optional[ImageSource] = None
    fine_style: Optional[ImageSource] = None
    coarse_style: Optional[ImageSource] = None

    def __post_init__(self) -> None:
        if isinstance(self.styles, (str, os.PathLike, Image.Image, np.ndarray)):
            self.styles = [self.styles]
        self.styles = list(self.styles or [])
        if self.style_masks is not None:
            if isinstance(self.style_masks, (str, os.PathLike, Image.Image, np.ndarray)):
                self.style_masks = [self.style_masks]
            self.style_masks = [None if _is_no_mask(m) else m for m in self.style_masks]
            if not self.style_masks:
                raise BadOption(f"style_masks is empty; give one mask (or '{NO_MASK}') per style image")
            if all(m is None for m in self.style_masks):
                self.style_masks = None

    @classmethod
    def split(cls, content: ImageSource, styles: Any, options: dict[str, Any]
              ) -> tuple["Inputs", dict[str, Any]]:
        """Inputs from ``options`` (the input keywords, and an ``init`` that is not one of
        content/noise/gray, i.e. an image), and the options that are left: the knobs."""
        knobs = dict(options)
        files = {name: knobs.pop(name) for name in FILE_FIELDS if name in knobs}
        init = knobs.get("init")
        if init is not None and not (isinstance(init, str) and init in INITS):
            if files.get("init_image") is not None:
                raise BadOption("init is an image and init_image is given too; give one of them")
            files["init_image"] = knobs.pop("init")
        return cls(content, styles, **files), knobs

    # ---- checks and loading ----------------------------------------------------------

    def check(self, config: Config) -> None:
        """Counts and combinations, before any file is opened."""
        if self.style_masks is not None and len(self.style_masks) != len(self.styles):
            raise BadOption(f"{len(self.style_masks)} style masks for {len(self.styles)} style "
                            f"images; give one mask (or '{NO_MASK}') per style image, in order")
        if (self.fine_style is None) != (self.coarse_style is None):
            raise BadOption("fine_style and coarse_style go together: give both or neither")
        if config.loss.style_weight > 0 and not self.styles and self.fine_style is None:
            raise BadOption("no style image was given (or give a fine and a coarse style to mix)")
        blend = config.image.style_blend_weights
        if blend is not None and len(blend) != len(self.styles):
            raise BadOption(blend_count_message(len(blend), len(self.styles)))
        if self.init_image is not None and config.image.init != "content":
            raise BadOption(f"init is {config.image.init!r} but a starting image was given too; "
                            "give one of them")

    def load(self, config: Config, *, allow_paths: bool = True) -> LoadedInputs:
        """Check, open and decode every image, so a bad file fails before any work.
        ``allow_paths=False``: refuse a path (a server never opens one a client named)."""
        self.check(config)
        if not allow_paths:
            for name, _, source in self.items():
                if isinstance(source, (str, os.PathLike, bytes)):
                    raise BadImage(f"{name}: a path was given where only an image is taken")

        def image(source: ImageSource, what: str) -> torch.Tensor:
            return to_tensor(load_image(source, what))

        n = len(self.styles)
        styles = [image(s, f"style image {i + 1}" if n > 1 else "style image")
                  for i, s in enumerate(self.styles)]
        masks = None
        if self.style_masks is not None:
            masks = [None if m is None else load_mask(m, _mask_label(m, i, n))
                     for i, m in enumerate(self.style_masks)]
        return LoadedInputs(
            image(self.content, "content image"), styles,
            init_image=None if self.init_image is None else image(self.init_image, "init image"),
            style_masks=masks,
            keep_mask=None if self.keep_mask is None else load_mask(self.keep_mask, "keep mask"),
            fine_style=None if self.fine_style is None else image(self.fine_style, "fine style image"),
            coarse_style=None if self.coarse_style is None else image(self.coarse_style, "coarse style image"))

    # ---- views -----------------------------------------------------------------------

    def items(self) -> Iterator[tuple[str, Optional[int], ImageSource]]:
        """(field, index within its list or None, source) of every image given."""
        yield "content", None, self.content
        for i, s in enumerate(self.styles):
            yield "styles", i, s
        for f in fields(self)[2:]:
            value = getattr(self, f.name)
            if isinstance(value, list):
                for i, v in enumerate(value):
                    if v is not None:
                        yield f.name, i, v
            elif value is not None:
                yield f.name, None, value

    def describe(self) -> dict[str, Any]:
        """For the run record: paths as the user gave them, other images by kind and size.
        Fields not given are left out."""
        out: dict[str, Any] = {"content": describe(self.content),
                               "styles": [describe(s) for s in self.styles]}
        if self.style_masks is not None:
            out["style_masks"] = [None if m is None else describe(m) for m in self.style_masks]
        for name in ("keep_mask", "init_image", "fine_style", "coarse_style"):
            value = getattr(self, name)
            if value is not None:
                out[name] = describe(value)
        return out


def describe(source: Any) -> Any:
    """A short, path-revealing-only-what-was-given description of one image source."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Image.Image):
        return f"<PIL image {source.width}x{source.height}>"
    if isinstance(source, np.ndarray):
        return f"<array {'x'.join(map(str, source.shape))}>"
    return f"<{type(source).__name__}>"


def _is_no_mask(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() == NO_MASK)


def _mask_label(source: Any, index: int, count: int) -> str:
    """'mask of style image 2': the file's own name is added where a message names it."""
    return f"mask of style image {index + 1}" if count > 1 else "mask of the style image"


def blend_count_message(weights: int, styles: int) -> str:
    return (f"style_blend_weights has {weights} weight{'s' if weights != 1 else ''} for {styles} "
            f"style image{'s' if styles != 1 else ''}: give one weight per style image, in order")


def as_style_list(styles: Any) -> list[ImageSource]:
    """One style or a sequence of them (None: none, as with a fine/coarse pair)."""
    if styles is None:
        return []
    if isinstance(styles, (list, tuple)):
        return list(styles)
    return [styles]


def split_mask_list(masks: Sequence[str]) -> Optional[list[Optional[str]]]:
    """A comma-separated list of mask paths (with 'none') from a command line."""
    return [None if _is_no_mask(m) else m for m in masks] if masks else None
