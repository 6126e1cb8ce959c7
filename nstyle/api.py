"""The Python entry points: ``stylize`` for one call, ``prepare``/``Stylizer`` for control.

    import nstyle
    img = nstyle.stylize("photo.jpg", "painting.jpg", style_weight=1e5, iterations=300)
    img.save("out.png")

Images may be paths, PIL images or NumPy arrays; options are the flat names of
``nstyle.config`` (the same as the CLI's flags, with underscores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import torch
from PIL import Image

from .config import Config
from .engine import BUILTIN_INITS, CancelToken, Progress, Result, Stylizer
from .images import ImageSource, load_image, to_tensor


@dataclass
class Inputs:
    """Decoded inputs of a run, as tensors the engine takes."""

    content: torch.Tensor
    styles: list[torch.Tensor]
    init_image: Optional[torch.Tensor]


def prepare(content: ImageSource, styles: Sequence[ImageSource], config: Config) -> Inputs:
    """Load and check every image a run needs (content, styles, an init image path)."""
    content_t = to_tensor(load_image(content, "content image"))
    styles_t = [to_tensor(load_image(s, f"style image {i + 1}" if len(styles) > 1 else "style image"))
                for i, s in enumerate(styles)]
    init_t = None
    if config.image.init not in BUILTIN_INITS:
        init_t = to_tensor(load_image(config.image.init, "init image"))
    return Inputs(content_t, styles_t, init_t)


def _as_list(styles: Union[ImageSource, Sequence[ImageSource]]) -> list[ImageSource]:
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
    return Stylizer(config).run(inputs.content, inputs.styles, init_image=inputs.init_image,
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
