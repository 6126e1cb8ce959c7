"""The Python entry points: ``stylize`` for one call, ``prepare``/``Stylizer`` for control.

    import nstyle
    img = nstyle.stylize("photo.jpg", "painting.jpg", style_weight=1e5, iterations=300)
    img.save("out.png")
    img = nstyle.stylize("photo.jpg", ["sky.jpg", "ground.jpg"], style_masks=["sky_mask.png", "none"],
                         preserve_colors="luminance", size=1024)

Images may be paths, PIL images or NumPy arrays; options are the flat names of
``nstyle.config`` (the same as the CLI's flags, with underscores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
from PIL import Image

from .config import NO_MASK, Config
from .engine import BUILTIN_INITS, CancelToken, Progress, Result, Stylizer
from .errors import BadOption
from .images import ImageSource, load_image, to_tensor
from .regions import load_mask


@dataclass
class Inputs:
    """Decoded inputs of a run, as tensors the engine takes."""

    content: torch.Tensor
    styles: list[torch.Tensor]
    init_image: Optional[torch.Tensor]
    style_masks: Optional[list[Optional[torch.Tensor]]] = None
    keep_mask: Optional[torch.Tensor] = None
    fine_style: Optional[torch.Tensor] = None
    coarse_style: Optional[torch.Tensor] = None

    def run_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``Stylizer.run`` (besides content and styles)."""
        return {"init_image": self.init_image, "style_masks": self.style_masks,
                "keep_mask": self.keep_mask, "fine_style": self.fine_style,
                "coarse_style": self.coarse_style}


def prepare(content: ImageSource, styles: Sequence[ImageSource], config: Config) -> Inputs:
    """Load and check every image a run needs (content, styles, masks, an init image path,
    the scale-mixing pair), so a bad file fails before any work."""
    mask_paths = config.regions.mask_paths()
    if mask_paths is not None and len(mask_paths) != len(styles):
        raise BadOption(f"{len(mask_paths)} style masks for {len(styles)} style images; give one "
                        f"mask (or '{NO_MASK}') per style image, in order")
    if config.style_weight_needs_styles and not styles:
        raise BadOption("no style image was given (or use --fine-style with --coarse-style)")
    content_t = to_tensor(load_image(content, "content image"))
    styles_t = [to_tensor(load_image(s, f"style image {i + 1}" if len(styles) > 1 else "style image"))
                for i, s in enumerate(styles)]
    init_t = None
    if config.image.init not in BUILTIN_INITS:
        init_t = to_tensor(load_image(config.image.init, "init image"))
    masks = None
    if mask_paths is not None:
        masks = [None if m is None else load_mask(m, f"mask {m!r} of style image {i + 1}")
                 for i, m in enumerate(mask_paths)]
    keep = None if config.regions.keep_mask is None else load_mask(config.regions.keep_mask, "keep mask")
    fine = coarse = None
    if config.scale.fine_style is not None:
        fine = to_tensor(load_image(config.scale.fine_style, "fine style image"))
        coarse = to_tensor(load_image(config.scale.coarse_style, "coarse style image"))
    return Inputs(content_t, styles_t, init_t, masks, keep, fine, coarse)


def _as_list(styles: Union[None, ImageSource, Sequence[ImageSource]]) -> list[ImageSource]:
    if styles is None:  # only with fine_style/coarse_style
        return []
    if isinstance(styles, (list, tuple)):
        return list(styles)
    return [styles]


def run(content: ImageSource, styles: Union[ImageSource, Sequence[ImageSource]],
        config: Optional[Config] = None, *,
        callback: Optional[Callable[[Progress], None]] = None,
        cancel: Optional[CancelToken] = None, **options: Any) -> Result:
    """Like ``stylize`` but returns the full ``Result`` (image tensor, losses, timings)."""
    config = Config.from_options(config, **options)
    inputs = prepare(content, _as_list(styles), config)
    return Stylizer(config).run(inputs.content, inputs.styles, **inputs.run_arguments(),
                                callback=callback, cancel=cancel)


def stylize(content: ImageSource, styles: Union[ImageSource, Sequence[ImageSource]],
            config: Optional[Config] = None, *,
            callback: Optional[Callable[[Progress], None]] = None,
            cancel: Optional[CancelToken] = None, **options: Any) -> Image.Image:
    """Repaint ``content`` in the style of ``styles`` (one image or a list); returns a PIL image.

    ``options`` are flat option names (``size=384, style_weight=1e5, optimizer='adam'``);
    ``callback`` receives a ``Progress`` after every iteration and may call ``.stop()``.
    """
    return run(content, styles, config, callback=callback, cancel=cancel, **options).to_pil()
