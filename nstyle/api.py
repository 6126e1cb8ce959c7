"""The Python entry points: ``stylize`` for one call, ``prepare``/``Stylizer`` for control.

    import nstyle
    img = nstyle.stylize("photo.jpg", "painting.jpg", style_weight=1e5, iterations=300)
    img.save("out.png")
    img = nstyle.stylize("photo.jpg", ["sky.jpg", "ground.jpg"], style_masks=["sky_mask.png", None],
                         preserve_colors="luminance", size=1024)

Images (content, styles and the input files of ``nstyle.io.inputs``: ``style_masks``,
``keep_mask``, ``init_image``, ``fine_style``, ``coarse_style``) may be paths, PIL images or
NumPy arrays; the other keywords are the options of ``nstyle.options.config`` (the CLI's flags,
with underscores).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

from PIL import Image

from nstyle.options.config import Config
from nstyle.core.events import CancelToken, Progress, Result
from nstyle.core.stylizer import Stylizer
from nstyle.io.images import ImageSource
from nstyle.io.inputs import Inputs, LoadedInputs, as_style_list
from nstyle.tasks.video import stylize_frames


def prepare(content: ImageSource, styles: Sequence[ImageSource] = (),
            config: Optional[Config] = None, **files: Any) -> LoadedInputs:
    """Load and check every image a run needs (``files``: the input keywords, e.g.
    ``keep_mask=``), so a bad file fails before any work."""
    return Inputs(content, as_style_list(styles), **files).load(config or Config())


def run(content: ImageSource, styles: Union[None, ImageSource, Sequence[ImageSource]] = None,
        config: Optional[Config] = None, *,
        callback: Optional[Callable[[Progress], None]] = None,
        cancel: Optional[CancelToken] = None, **options: Any) -> Result:
    """Like ``stylize`` but returns the full ``Result`` (image tensor, losses, timings)."""
    inputs, knobs = Inputs.split(content, as_style_list(styles), options)
    config = Config.from_options(config, **knobs)
    loaded = inputs.load(config)
    return Stylizer(config).run(loaded.content, loaded.styles, **loaded.run_arguments(),
                                callback=callback, cancel=cancel)


def stylize(content: ImageSource, styles: Union[None, ImageSource, Sequence[ImageSource]] = None,
            config: Optional[Config] = None, *,
            callback: Optional[Callable[[Progress], None]] = None,
            cancel: Optional[CancelToken] = None, **options: Any) -> Image.Image:
    """Repaint ``content`` in the style of ``styles`` (one image or a list); returns a PIL image.

    ``options`` are flat option names (``size=384, style_weight=1e5, optimizer='adam'``) and
    input images (``style_masks=[...]``, ``keep_mask=``, ``init_image=``, ``fine_style=``,
    ``coarse_style=``); ``callback`` receives a ``Progress`` after every iteration and may
    call ``.stop()``.
    """
    return run(content, styles, config, callback=callback, cancel=cancel, **options).to_pil()


def stylize_video(frames: Iterable[ImageSource],
                  styles: Union[None, ImageSource, Sequence[ImageSource]] = None,
                  config: Optional[Config] = None, *,
                  callback: Optional[Callable[[Any], None]] = None,
                  cancel: Optional[CancelToken] = None, **options: Any) -> Iterator[Image.Image]:
    """Stylize a clip's frames (an iterable of paths, PIL images or arrays of one size),
    yielding each stylized frame (a PIL image) as it is done, without flicker: every frame
    after the first starts from the previous output warped by the optical flow and keeps
    close to it (``nstyle.tasks.video``; needs ``nstyle[video]``). ``options``: the engine's and
    ``temporal_weight``, ``flow``, ``frame_iterations``, ``independent``, ``whole_frame_style``,
    ``deep_layer_in_later_frames``;
    ``callback`` receives a ``video.FrameProgress`` (frame index and the engine's event)
    every iteration.
    Options and styles are checked before the first frame. For how each frame was made
    (losses, temporal error), use ``nstyle.tasks.video.stylize_frames``."""
    done = stylize_frames(frames, styles, config, callback=callback, cancel=cancel, **options)
    return (frame.image for frame in done)
