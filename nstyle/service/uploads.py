"""Checks a submitted job completely, in memory, before anything of it is stored.

A request is either accepted whole or refused with one clear message that names the field
it concerns: every image is sized from its header, then decoded, and every option goes
through ``Config.from_options`` (the code the CLI uses), then through this server's limits
on work. So a job that reaches the queue can only fail for run-time reasons.

Every image a job uses arrives here as an upload: the input files of ``nstyle.io.inputs``
(masks, keep mask, starting image, scale-mixing pair) are upload fields, and no text field
can name a file, so the server never opens a path a client chose.
"""

from __future__ import annotations

import asyncio
import ctypes
import io
import re
import shutil
import sys
import threading
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, BinaryIO, Iterable, Optional

from PIL import Image

from nstyle.options.config import Config, OptionInfo, iter_options
from nstyle.core.device import resolve_device
from nstyle.errors import BadImage, BadOption, NStyleError
from nstyle.io.images import check_structure, decode_image, load_mask
from nstyle.io.inputs import Inputs
from nstyle.options.inputs import FILE_FIELDS, NO_MASK
from nstyle.core.plan import schedule
from nstyle.service.errors import Busy, OverLimit, UnsupportedFormat
from nstyle.service.settings import MB, ServiceSettings
from nstyle.tasks.base import IMAGE

#: option sections a client may not set: ``output`` names files on the server's disk (the
#: service keeps previews and results itself); ``memory`` is the server's to bound
SERVER_ONLY_SECTIONS = ("output", "memory")

#: form fields that carry images
CONTENT_FIELD, STYLE_FIELDS, MASK_FIELD = "content", ("style", "styles"), "style_mask"
#: the single-image input fields, by form field name
SINGLE_FIELDS = ("keep_mask", "init_image", "fine_style", "coarse_style")
IMAGE_FIELDS = (CONTENT_FIELD, *STYLE_FIELDS, MASK_FIELD, *SINGLE_FIELDS)

THUMBNAIL_SIZE = 256
#: block size of an upload's copy into the job's folder
UPLOAD_COPY_BLOCK = 1 << 20
#: a displayed file name is cut to this many characters
MAX_NAME_CHARS = 120
#: longest option name worth looking up (a longer one is refused without a hint)
MAX_NAME_LOOKUP = 64

#: file extension for each accepted Pillow format (files are stored under their real
#: format, whatever their name said)
EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif",
              "GIF": ".gif", "MPO": ".jpg"}
#: the media type a stored file is served with, by its extension (which comes from its
#: real format): never one guessed from the client's file name, which could say .html
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp",
               ".bmp": "image/bmp", ".tif": "image/tiff", ".gif": "image/gif",
               ".mp4": "video/mp4", ".mkv": "video/x-matroska", ".avi": "video/x-msvideo"}


def media_type(stored_name: str) -> str:
    """The media type of a stored upload, from the extension its real format gave it."""
    return MEDIA_TYPES.get(stored_name[stored_name.rfind("."):].lower(), "application/octet-stream")


def blame(exc: NStyleError, field_name: str, index: Optional[int] = None) -> NStyleError:
    """Tag an error with the form field (and the index within a repeated field) it
    concerns, so the page can show it next to that field."""
    if getattr(exc, "field", None) is None:
        exc.field = field_name  # type: ignore[attr-defined]
        exc.index = index  # type: ignore[attr-defined]
    return exc


@dataclass
class Upload:
    """One file of the request, as received: left in the form's spooled file (on disk past
    1 MB), and read whole only while one step uses it, so that a request of 15 files of
    20 MB holds one of them in memory at a time, not all 15."""

    field: str
    filename: str
    file: BinaryIO = field(repr=False)
    size: int  # the full size, as received
    index: int = 0  # its place among the files of the same field

    @classmethod
    def of_bytes(cls, field_name: str, filename: str, data: bytes, index: int = 0) -> "Upload":
        return cls(field_name, filename, io.BytesIO(data), len(data), index)

    def read(self) -> bytes:
        """The whole file, read again at each call: the caller drops it when done."""
        self.file.seek(0)
        return self.file.read()

    def save(self, path: Path) -> None:
        """Copy it to ``path`` in blocks (never whole in memory)."""
        self.file.seek(0)
        with open(path, "wb") as out:
            shutil.copyfileobj(self.file, out, UPLOAD_COPY_BLOCK)


@dataclass
class InputImage:
    name: str  # the user's file name, for display only
    upload: Upload = field(repr=False)  # stored byte for byte
    ext: str  # from its real format
    width: int
    height: int
    thumbnail: bytes = field(repr=False)  # PNG, longest side <= THUMBNAIL_SIZE
    frames: Optional[int] = None  # a clip's frame count, as counted when it was accepted


@dataclass
class StoredInput:
    """An accepted image and where it goes: ``key`` is its stored name and URL part."""

    key: str  # content, style-1, style-mask-1, keep-mask, init-image, fine-style, coarse-style
    field: str  # the Inputs field: content, styles, style_masks, keep_mask, ...
    index: Optional[int]
    image: InputImage


@dataclass
class Submission:
    config: Config
    options: dict[str, str]  # the options as the client gave them
    files: list[StoredInput]
    kind: str = IMAGE  # the job's kind (``nstyle.tasks.base.KINDS``)

    def entry(self, key: str) -> StoredInput:
        return next(f for f in self.files if f.key == key)


def client_options() -> list[OptionInfo]:
    """The engine options a client may set (every option, less the server's own)."""
    return [o for o in iter_options() if o.section not in SERVER_ONLY_SECTIONS]


def fmt_bytes(n: int) -> str:
    return f"{n / MB:.1f} MB" if n >= MB else f"{max(1, round(n / 1024))} kB"


def display_name(filename: str, fallback: str) -> str:
    name = (filename or fallback).replace("\\", "/").rsplit("/", 1)[-1] or fallback
    if len(name) > MAX_NAME_CHARS:  # keep the extension, which says what it is
        stem, dot, ext = name.rpartition(".")
        name = (stem[: MAX_NAME_CHARS - len(ext) - 2] + "…" + dot + ext) if dot and len(ext) < 10 \
            else name[: MAX_NAME_CHARS - 1] + "…"
    return name


# --------------------------------------------------------------------------- images


def probe_image(upload: Upload, what: str, settings: ServiceSettings) -> tuple[str, int, int]:
    """Size, format and pixel limits from the header only: (format, width, height)."""
    label = f"{what} {upload.filename!r}" if upload.filename else what
    if upload.size > settings.max_upload_bytes:
        raise OverLimit(f"{label} is {fmt_bytes(upload.size)}, over this server's limit of "
                        f"{fmt_bytes(settings.max_upload_bytes)} per image")
    data = upload.read()
    check_structure(data, label)  # before Pillow parses a header of a million parts
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:  # reads the header only
                fmt, (width, height) = probe.format, probe.size
                if fmt == "MPO":  # what Pillow calls many phones' JPEGs (a JPEG + extras)
                    fmt = "JPEG"
    except Image.DecompressionBombError as exc:  # Pillow's own limit, far above ours
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise OverLimit(f"{label} has {size}, over this server's limit of "
                        f"{settings.max_pixels:,}; downscale it first") from None
    except Exception:
        decode_image(data, label)  # raises BadImage with the CLI's message
        raise BadImage(f"{label} is not an image this server can read") from None
    if fmt not in settings.formats or fmt not in EXTENSIONS:
        raise UnsupportedFormat(f"{label} is a {fmt} image; this server takes "
                                f"{', '.join(f.lower() for f in settings.formats)}")
    if width * height > settings.max_pixels:
        raise OverLimit(f"{label} is {width}x{height} = {width * height:,} pixels, over this "
                       f"server's limit of {settings.max_pixels:,}; downscale it first")
    return fmt, width, height


def decode_upload(upload: Upload, what: str, fmt: str, mask: bool) -> InputImage:
    """A full decode (the engine's own checks: a mask must select something), and a
    thumbnail; the decoded pixels are dropped on return."""
    label = f"{what} {upload.filename!r}" if upload.filename else what
    image = decode_image(upload.read(), label)
    if mask:
        load_mask(image, label)  # refuses an all-black mask, as the CLI does
    width, height = image.size
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)  # in place: no copy
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return InputImage(display_name(upload.filename, what), upload, EXTENSIONS[fmt],
                      width, height, buf.getvalue())


def release_memory() -> None:
    """Hand freed heap memory back to the OS. Decoded images are freed at once, but glibc
    keeps the pages of its arenas: without this, a burst of large uploads leaves the
    process at its peak size for good (measured in bench/load_service.py --faults)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to do
        pass


# --------------------------------------------------------------------------- options


def check_options(fields: Iterable[tuple[str, str]], settings: ServiceSettings
                  ) -> tuple[Config, dict[str, str]]:
    """Form fields -> a validated ``Config``; empty fields mean 'the default'. An error
    names the field it concerns (``blame``)."""
    server_only = {o.name: o.section for o in iter_options() if o.section in SERVER_ONLY_SECTIONS}
    given: dict[str, str] = {}
    for name, value in fields:
        if len(name) > MAX_NAME_LOOKUP:
            raise BadOption(f"unknown option {name[:MAX_NAME_LOOKUP]!r}… (names are short: "
                            "see GET /api/info)")
        if name in server_only:
            why = ("names a file on the server" if server_only[name] == "output"
                   else "is this server's to set")
            raise blame(BadOption(f"option {name!r} {why} and cannot be set through the API"), name)
        if name in given:
            raise blame(BadOption(f"option {name!r} was given twice"), name)
        if len(value) > settings.max_field_chars:
            raise blame(BadOption(f"option {name!r} is {len(value):,} characters long, over this "
                                  f"server's limit of {settings.max_field_chars} per field"), name)
        if value.strip() == "":  # an HTML form sends its empty fields too
            continue
        given[name] = value.strip()
    config = Config()
    for name in given:  # one at a time, so that an error names its field
        try:
            config = Config.from_options(config, **{name: given[name]})
        except NStyleError as exc:
            raise blame(exc, name) from None
    if settings.memory_limit_gib is not None:
        config = Config.from_options(config, memory_limit=settings.memory_limit_gib)
    try:
        resolve_device(config.model.device)  # 'cuda' on a machine without one: say so now
    except NStyleError as exc:
        raise blame(exc, "device") from None
    return config, given


def check_work(config: Config, content_wh: tuple[int, int], mix_wh: Optional[tuple[int, int]],
               settings: ServiceSettings) -> None:
    """The server's bounds on what one job may ask for, each named in its message."""
    size_field = "scales" if config.scale.scales is not None else "size"
    if config.output_size > settings.max_size:
        raise blame(BadOption(f"an output size of {config.output_size} px is over this server's "
                              f"limit of {settings.max_size} px"), size_field)
    style_side = round(config.image.style_scale * config.output_size)
    if style_side > settings.max_size:
        raise blame(BadOption(f"style_scale {config.image.style_scale:g} makes the style images "
                              f"{style_side} px, over this server's limit of {settings.max_size} px"),
                    "style_scale")
    # the engine's own schedule: the totals a job is held to are those it will run
    plan = schedule(config, content_wh[::-1], mix_wh[::-1] if mix_wh is not None else None)
    counts = [s.iterations for s in plan.scales]
    mix = plan.mix.iterations if plan.mix is not None else 0
    total = plan.total_iterations
    count_field = "scale_iterations" if config.scale.scale_iterations is not None else "iterations"
    if total > settings.max_iterations:
        where = f" ({'+'.join(map(str, counts))} over {len(counts)} scales" + (
            f", {mix} to mix the styles)" if mix else ")") if len(counts) > 1 or mix else ""
        raise blame(BadOption(f"{total:,} iterations{where} is over this server's limit of "
                              f"{settings.max_iterations:,} per job"),
                    "mix_iterations" if mix > settings.max_iterations else count_field)
    work = sum(s.width * s.height * s.iterations for s in plan.steps)
    if work > settings.max_megapixel_iterations * 1e6:
        raise blame(BadOption(f"this job asks for {work / 1e6:,.0f} million pixel-iterations "
                              "(output pixels x iterations at each scale), over this server's limit "
                              f"of {settings.max_megapixel_iterations:,.0f} million; use a smaller "
                              "size or fewer iterations"), count_field)


# --------------------------------------------------------------------------- the request


#: what a stored input file is called, by Inputs field
KEYS = {"content": "content", "styles": "style", "style_masks": "style-mask",
        "keep_mask": "keep-mask", "init_image": "init-image", "fine_style": "fine-style",
        "coarse_style": "coarse-style"}


def _key(field_name: str, index: Optional[int]) -> str:
    return KEYS[field_name] + (f"-{index + 1}" if index is not None else "")


def _what(field_name: str, index: Optional[int], n_styles: int) -> str:
    if field_name == "content":
        return "content image"
    label = FILE_FIELDS[field_name].label if field_name in FILE_FIELDS else "style image"
    if index is not None and n_styles > 1:
        return f"{label} {index + 1}"
    return label


def _form_field(field_name: str) -> str:
    return {"styles": "style", "style_masks": MASK_FIELD}.get(field_name, field_name)


def sort_uploads(uploads: list[Upload], mask_texts: list[tuple[int, str]]
                 ) -> tuple[Inputs, dict[tuple[str, Optional[int]], Upload]]:
    """The uploads as an ``Inputs`` of Upload objects (nothing decoded yet), and each one
    by (Inputs field, index). ``mask_texts``: (position, 'none') for styles without a mask."""
    stray = [u.field for u in uploads if u.field not in IMAGE_FIELDS]
    if stray:
        raise BadOption(f"unexpected file field {stray[0]!r}: send the photo as 'content', each "
                        f"style image as 'style', masks as '{MASK_FIELD}' and "
                        f"{', '.join(SINGLE_FIELDS)} as files")
    contents = [u for u in uploads if u.field == CONTENT_FIELD]
    styles = [u for u in uploads if u.field in STYLE_FIELDS]
    if len(contents) != 1:
        raise blame(BadImage("send exactly one content image, as the file field 'content'"
                             if not contents else "send only one content image"), CONTENT_FIELD)
    masks: list[Any] = sorted([(u.index, u) for u in uploads if u.field == MASK_FIELD]
                              + mask_texts, key=lambda t: t[0])
    singles = {}
    for name in SINGLE_FIELDS:
        found = [u for u in uploads if u.field == name]
        if len(found) > 1:
            raise blame(BadImage(f"send at most one {FILE_FIELDS[name].label}"), name)
        singles[name] = found[0] if found else None
    mask_list = [m for _, m in masks] or None
    inputs = Inputs(contents[0], styles, style_masks=mask_list, **singles)
    by_place = {(name, index): source for name, index, source in inputs.items()}
    return inputs, by_place


def check_submission(uploads: list[Upload], fields: list[tuple[str, str, int]],
                     settings: ServiceSettings, decode_gate: Optional[threading.Semaphore] = None
                     ) -> Submission:
    """The whole request, checked: raises an ``NStyleError`` (4xx) or returns a Submission.
    ``fields``: the text fields as (name, value, place in the form); the place orders the
    'none' of a style without a mask among the mask files."""
    mask_texts, option_fields = [], []
    for name, value, position in fields:
        if name == MASK_FIELD and value.strip().lower() == NO_MASK:
            mask_texts.append((position, None))
        elif name in IMAGE_FIELDS:
            raise blame(BadOption(f"field {name!r} must be a file upload, not text"
                                  + (f" (or '{NO_MASK}' for a style without a mask)"
                                     if name == MASK_FIELD else "")), name)
        else:
            option_fields.append((name, value))
    inputs, by_place = sort_uploads(uploads, mask_texts)
    n_styles = len(inputs.styles)
    if n_styles > settings.max_styles:
        raise blame(OverLimit(f"{n_styles} style images, over this server's limit of "
                             f"{settings.max_styles}"), "style")
    config, given = check_options(option_fields, settings)
    try:
        inputs.check(config)  # counts and combinations: nothing is opened
    except NStyleError as exc:
        raise blame(exc, _field_of(str(exc))) from None

    # every header first: a request over the pixel budget is refused before any decoding
    probes = {}
    for (name, index), upload in by_place.items():
        try:
            probes[(name, index)] = probe_image(upload, _what(name, index, n_styles), settings)
        except NStyleError as exc:
            raise blame(exc, _form_field(name), index) from None
    total = sum(w * h for _, w, h in probes.values())
    if total > settings.max_request_pixels:
        raise OverLimit(f"the images of this request have {total:,} pixels together, over this "
                       f"server's limit of {settings.max_request_pixels:,} per job; downscale them")
    mix = probes.get(("coarse_style", None))
    _, cw, ch = probes[("content", None)]
    check_work(config, (cw, ch), (mix[1], mix[2]) if mix else None, settings)

    files = []
    gate = decode_gate or threading.Semaphore(1)
    with gate:  # one request's pixels decoded at a time, whatever the number of requests
        try:
            for (name, index), upload in by_place.items():
                try:
                    image = decode_upload(upload, _what(name, index, n_styles), probes[(name, index)][0],
                                          mask=FILE_FIELDS[name].mask if name in FILE_FIELDS else False)
                except NStyleError as exc:
                    raise blame(exc, _form_field(name), index) from None
                files.append(StoredInput(_key(name, index if name in ("styles", "style_masks") else None),
                                         name, index, image))
        finally:
            release_memory()
    return Submission(config, given, files)


def _field_of(message: str) -> str:
    """The form field an ``Inputs.check`` message is about."""
    for needle, name in (("style masks", MASK_FIELD), ("fine_style", "fine_style"),
                         ("style_blend_weights", "style_blend_weights"),
                         ("starting image", "init_image"), ("no style image", "style")):
        if needle in message:
            return name
    return "style"


#: most text fields one request may carry (there are about 30 options)
MAX_FIELDS = 100
#: a text part longer than this is refused by the form parser itself; shorter ones over
#: the server's --max-field-chars get a message that names the field
MAX_PART_BYTES = 64 * 1024


@asynccontextmanager
async def read_form(request: Any, settings: ServiceSettings, what: str
                    ) -> AsyncIterator[tuple[list[Upload], list[tuple[str, str, int]]]]:
    """A job's multipart form (``what``: the job or the sheet, for the message): its
    uploads and its text fields, each with its position in the form, for as long as the
    ``async with`` lasts (the uploads' files go with it). One of ``settings.form_slots``
    is held meanwhile: the forms read at once, and so the memory and temporary disk they
    use, are bounded whatever the number of clients. Each upload's size is checked
    against its limit later, by the step that knows what it is (nothing is read yet)."""
    from starlette.datastructures import UploadFile

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        first = "a file 'clip'" if what == "video" else "a file 'content'"
        raise BadOption(f"send the {what} as multipart/form-data: {first}, files "
                        "'style' and options as text fields")
    slots: asyncio.Semaphore = request.app.state.form_slots
    try:
        await asyncio.wait_for(slots.acquire(), settings.form_wait_seconds)
    except asyncio.TimeoutError:
        raise Busy(f"the server is reading {settings.form_slots} other uploads; send the {what} "
                   "again in a moment") from None
    try:
        uploads: list[Upload] = []
        fields: list[tuple[str, str, int]] = []
        async with request.form(max_files=settings.max_files, max_fields=MAX_FIELDS,
                                max_part_size=MAX_PART_BYTES) as form:
            for position, (key, value) in enumerate(form.multi_items()):
                if isinstance(value, UploadFile):
                    if not value.filename and not value.size:
                        continue  # an <input type=file> left empty
                    size = value.size if value.size is not None else _file_size(value.file)
                    uploads.append(Upload(key, value.filename or "", value.file, size, position))
                else:
                    fields.append((key, value, position))
            yield uploads, fields
    finally:
        slots.release()
        await asyncio.to_thread(release_memory)  # not on the event loop: it can take ms


def _file_size(file: BinaryIO) -> int:
    file.seek(0, io.SEEK_END)
    return file.tell()
