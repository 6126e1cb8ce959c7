"""Checks a submitted job completely, in memory, before anything of it is stored.

A request is either accepted whole or refused with one clear message: every image is
sized, sniffed and decoded, and every option goes through ``Config.from_options`` (the
code the CLI uses) here, so a job that reaches the queue can only fail for run-time
reasons (out of memory, a diverging loss).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Iterable

from PIL import Image

from ..config import Config, OptionInfo, iter_options
from ..engine import BUILTIN_INITS, resolve_device
from ..errors import BadImage, BadOption
from ..images import decode_image
from .errors import TooLarge, UnsupportedFormat
from .settings import MB, ServiceSettings

#: option sections a client may not set: they name files on the server's own disk
#: (the service keeps previews and results itself)
SERVER_ONLY_SECTIONS = ("output",)

#: form fields that carry images rather than options
CONTENT_FIELD, STYLE_FIELDS = "content", ("style", "styles")

THUMBNAIL_SIZE = 256

#: file extension for each accepted Pillow format (files are stored under their real
#: format, whatever their name said)
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif",
              "GIF": ".gif", "MPO": ".jpg"}


@dataclass
class Upload:
    """One file of the request, as received."""

    field: str
    filename: str
    data: bytes  # at most the per-image limit + 1 byte: enough to refuse the rest unread
    size: int  # the full size, as received


@dataclass
class InputImage:
    name: str  # the user's file name, for display only
    data: bytes  # the upload, byte for byte
    ext: str  # from its real format
    width: int
    height: int
    thumbnail: bytes = field(repr=False)  # PNG, longest side <= THUMBNAIL_SIZE


@dataclass
class Submission:
    config: Config
    options: dict[str, str]  # the options as the client gave them
    content: InputImage
    styles: list[InputImage]


def client_options() -> list[OptionInfo]:
    """The engine options a client may set (every option, less server-side paths)."""
    return [o for o in iter_options() if o.section not in SERVER_ONLY_SECTIONS]


def fmt_bytes(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB else f"{max(1, round(n / 1024))} kB"


def check_image(upload: Upload, what: str, settings: ServiceSettings) -> InputImage:
    """Size, format and pixel limits, then a full decode (the engine's own checks)."""
    label = f"{what} {upload.filename!r}" if upload.filename else what
    if upload.size > settings.max_upload_bytes or len(upload.data) > settings.max_upload_bytes:
        size = max(upload.size, len(upload.data))
        raise TooLarge(f"{label} is {fmt_bytes(size)}, over this server's limit of "
                       f"{fmt_bytes(settings.max_upload_bytes)} per image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(upload.data)) as probe:  # reads the header only
                fmt, (width, height) = probe.format, probe.size
                if fmt == "MPO":  # what Pillow calls many phones' JPEGs (a JPEG + extras)
                    fmt = "JPEG"
    except Exception:
        decode_image(upload.data, label)  # raises BadImage with the CLI's message
        raise BadImage(f"{label} is not an image this server can read") from None
    if fmt not in settings.formats or fmt not in EXTENSIONS:
        raise UnsupportedFormat(f"{label} is a {fmt} image; this server takes "
                                f"{', '.join(f.lower() for f in settings.formats)}")
    if width * height > settings.max_pixels:
        raise TooLarge(f"{label} is {width}x{height} = {width * height:,} pixels, over this "
                       f"server's limit of {settings.max_pixels:,}; downscale it first")
    image = decode_image(upload.data, label)
    thumb = image.copy()
    thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return InputImage(upload.filename or what, upload.data, EXTENSIONS[fmt], image.width,
                      image.height, buf.getvalue())


def check_options(fields: Iterable[tuple[str, str]], n_styles: int,
                  settings: ServiceSettings) -> tuple[Config, dict[str, str]]:
    """Form fields -> a validated ``Config``; empty fields mean 'the default'."""
    server_only = {o.name for o in iter_options() if o.section in SERVER_ONLY_SECTIONS}
    given: dict[str, str] = {}
    for name, value in fields:
        if name in server_only:
            raise BadOption(f"option {name!r} names a file on the server and cannot be set "
                            "through the API")
        if name in given:
            raise BadOption(f"option {name!r} was given twice")
        if value.strip() == "":  # an HTML form sends its empty fields too
            continue
        given[name] = value.strip()
    config = Config.from_options(**given)  # unknown names get a "did you mean" hint
    if config.image.init not in BUILTIN_INITS:
        raise BadOption(f"init must be one of {', '.join(BUILTIN_INITS)} here (a path would "
                        "name a file on the server)")
    if config.image.size > settings.max_size:
        raise BadOption(f"size {config.image.size} is over this server's limit of "
                        f"{settings.max_size} pixels")
    blend = config.image.style_blend_weights
    if blend is not None and len(blend) != n_styles:
        raise BadOption(f"style_blend_weights has {len(blend)} values for {n_styles} style images")
    resolve_device(config.model.device)  # 'cuda' on a machine without one: say so now
    return config, given


def check_submission(uploads: list[Upload], fields: list[tuple[str, str]],
                     settings: ServiceSettings) -> Submission:
    """The whole request, checked: raises an ``NStyleError`` (4xx) or returns a Submission."""
    contents = [u for u in uploads if u.field == CONTENT_FIELD]
    styles = [u for u in uploads if u.field in STYLE_FIELDS]
    stray = [u.field for u in uploads if u.field != CONTENT_FIELD and u.field not in STYLE_FIELDS]
    if stray:
        raise BadOption(f"unexpected file field {stray[0]!r}: send the photo as 'content' and "
                        "each style image as 'style'")
    if len(contents) != 1:
        raise BadImage("send exactly one content image, as the file field 'content'"
                       if not contents else "send only one content image")
    if not styles:
        raise BadImage("send one or more style images, each as the file field 'style'")
    if len(styles) > settings.max_styles:
        raise TooLarge(f"{len(styles)} style images, over this server's limit of "
                       f"{settings.max_styles}")
    config, given = check_options(fields, len(styles), settings)
    content = check_image(contents[0], "content image", settings)
    style_images = [check_image(u, f"style image {i + 1}" if len(styles) > 1 else "style image",
                                settings) for i, u in enumerate(styles)]
    return Submission(config, given, content, style_images)

