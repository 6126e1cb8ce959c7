"""Reading, converting, resizing and atomically saving images.

Inputs may be paths, PIL images or NumPy arrays. Any Pillow mode is converted to RGB the
way a user expects: EXIF orientation applied, transparency composited on white, 16-bit
and float images scaled by their real range, CMYK/palette/grayscale converted. Images
larger than ``MAX_INPUT_PIXELS`` are refused before they are decoded, and so are files
whose structure would make decoding take far longer than their pixels need
(``check_structure``: a JPEG's scans, a header of millions of segments).
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from nstyle.core.image_tensors import fit_size  # noqa: F401 (re-exported: sizing is the engine's)
from nstyle.errors import BadImage, BadOutput

#: inputs with more pixels than this are refused (about 8000 x 6000); also the point
#: where Pillow's decompression-bomb warning becomes an error for us
MAX_INPUT_PIXELS = 50_000_000

#: a JPEG's scans are decoded one after the other, each a pass over every block of the
#: image (30 ms at 25 megapixels on a 2-core machine); encoders write 1 (baseline) to
#: about 12 (libjpeg's progressive script has 10), while a 200 kB file can hold
#: thousands of empty ones: minutes of decoding
MAX_JPEG_SCANS = 32
#: Pillow parses a JPEG's segments before its first scan, a PNG's chunks and a GIF's
#: extensions and their sub-blocks one by one in Python (about 1 us each, and a kept copy of each JPEG
#: segment): real files have tens to a few thousand, a 20 MB file can hold millions
MAX_JPEG_SEGMENTS = 1000
MAX_PNG_CHUNKS = 20_000
MAX_GIF_EXTENSION_BLOCKS = 10_000
#: a GIF's image data comes in sub-blocks of up to 255 bytes (encoders write full ones);
#: walking them costs a Python step each, so a file of 1-byte sub-blocks is refused
MAX_GIF_DATA_BLOCKS = 1_000_000

#: output formats by extension (Pillow format names)
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray]


# --------------------------------------------------------------------------- reading


def load_image(source: ImageSource, what: str = "image") -> Image.Image:
    """Open ``source`` and return it as an RGB PIL image, or raise ``BadImage``."""
    if isinstance(source, Image.Image):
        return to_rgb(source, what)
    if isinstance(source, np.ndarray):
        return to_rgb(_from_array(source, what), what)
    if not isinstance(source, (str, os.PathLike)):
        raise BadImage(f"{what}: expected a path, PIL image or NumPy array, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise BadImage(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise BadImage(f"{what} {str(path)!r} is a folder, not an image file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadImage(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    return decode_image(data, f"{what} {str(path)!r}")


def decode_image(data: bytes, what: str = "image") -> Image.Image:
    """Decode encoded image bytes (from a file or an upload) into an RGB PIL image."""
    if not data:
        raise BadImage(f"{what} is empty (0 bytes)")
    check_structure(data, what)
    with warnings.catch_warnings(record=True) as caught:
        # Pillow only warns on images past its own limit (and Image.open swallows the
        # warning if it is made an error): record it and refuse the image ourselves
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            _check_pixels(img.size, what)
            if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
                raise Image.DecompressionBombError(str(caught[0].message))
            img.load()
        except UnidentifiedImageError:
            raise BadImage(f"{what} is not an image Pillow can read (png, jpg, webp, tiff, ...)") from None
        except Image.DecompressionBombError:
            raise BadImage(f"{what} is too large: Pillow flags it as a decompression bomb "
                           f"(limit {Image.MAX_IMAGE_PIXELS:,} pixels)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise BadImage(f"{what} is damaged or truncated ({exc})") from None
    return to_rgb(img, what)


def check_structure(data: bytes, what: str = "image") -> None:
    """Refuse (``BadImage``) a JPEG, PNG or GIF whose structure would make Pillow take far
    longer than its pixels need: more scans or header segments than any encoder writes.
    Counted from the bytes before anything is parsed or decoded, in a bounded number of
    steps; other formats pass (their cost follows their pixels)."""
    if data[:2] == b"\xff\xd8":
        _check_jpeg(data, what)
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        _check_png(data, what)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        walk_gif(data, what, max_frames=0)


#: the next marker of a JPEG: 0xFF then a byte that is not stuffing (00), a restart marker
#: (D0-D7, which live inside a scan's data) or a fill byte (FF)
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
#: markers without a length: TEM and SOI
_JPEG_STANDALONE = (0x01, 0xD8)


def _check_jpeg(data: bytes, what: str) -> None:
    """Counts the segments and scans of the first image (what Pillow decodes; an MPO's
    other images follow its EOI), skipping each scan's data with one regex search."""
    pos = segments = scans = 0
    while (found := _JPEG_MARKER.search(data, pos)) is not None:
        marker, pos = data[found.start() + 1], found.end()
        if marker == 0xD9:  # EOI
            return
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise BadImage(f"{what} is a JPEG of more than {MAX_JPEG_SEGMENTS:,} segments; a "
                           "real photo has a few dozen: save it again with an image editor")
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise BadImage(f"{what} is a JPEG of more than {MAX_JPEG_SCANS} scans (encoders "
                               "write at most about 12, and each scan is a pass over the whole "
                               "image): save it again with an image editor")
        if marker not in _JPEG_STANDALONE:
            pos += int.from_bytes(data[pos:pos + 2], "big")


def _check_png(data: bytes, what: str) -> None:
    pos, chunks = 8, 0
    while pos + 8 <= len(data):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise BadImage(f"{what} is a PNG of more than {MAX_PNG_CHUNKS:,} chunks; encoders "
                           "write a few dozen to a few thousand: save it again with an image editor")
        if data[pos + 4:pos + 8] == b"IEND":
            return
        pos += 12 + int.from_bytes(data[pos:pos + 4], "big")


@dataclass(frozen=True)
class GifLayout:
    """What a GIF's blocks say, read without decoding: its screen size and the delay of each
    frame walked, in milliseconds (0 where it has none)."""

    width: int
    height: int
    durations: tuple[int, ...]


class TooManyFrames(BadImage):
    """A clip has more frames than the caller's limit (counted up to one past it)."""

    http_status = 413


def walk_gif(data: bytes, what: str = "GIF", max_frames: Optional[int] = None) -> GifLayout:
    """Walk a GIF's blocks without decoding them, up to the end or, with ``max_frames``,
    until one frame more than that is found (``TooManyFrames``); ``max_frames=0`` stops at
    the first frame's descriptor (all a still image needs). Bounded: refuses a GIF of more
    than ``MAX_GIF_EXTENSION_BLOCKS`` extension or ``MAX_GIF_DATA_BLOCKS`` data sub-blocks."""
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise BadImage(f"{what} is not a GIF, or is cut short")
    width, height, flags = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little"), data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    durations: list[int] = []
    delay, counts = 0, {"extension": 0, "data": 0}

    def skip_sub_blocks(pos: int, kind: str, limit: int) -> int:
        n = counts[kind]
        while True:  # the block itself (an empty one costs a step too), then each sub-block
            n += 1
            if n > limit:
                raise BadImage(f"{what} has more than {limit:,} {kind} blocks; encoders write "
                               "far fewer: save it again with an image editor")
            if pos >= len(data) or not data[pos]:
                counts[kind] = n
                return pos + 1
            pos += data[pos] + 1

    while pos < len(data):
        kind = data[pos]
        if kind == 0x21 and pos + 1 < len(data):  # an extension: label, then sub-blocks
            if data[pos + 1] == 0xF9 and pos + 6 < len(data):  # graphic control: the delay
                delay = int.from_bytes(data[pos + 4:pos + 6], "little") * 10
            pos = skip_sub_blocks(pos + 2, "extension", MAX_GIF_EXTENSION_BLOCKS)
        elif kind == 0x2C:  # a frame: descriptor, local palette, LZW code size, sub-blocks
            if max_frames is not None and len(durations) >= max_frames:
                if max_frames:
                    raise TooManyFrames(f"{what} has at least {max_frames + 1:,} frames, over "
                                        f"the limit of {max_frames:,}")
                break
            durations.append(delay)
            delay, local = 0, data[pos + 9] if pos + 9 < len(data) else 0
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
            pos = skip_sub_blocks(pos, "data", MAX_GIF_DATA_BLOCKS)
        else:  # the trailer (0x3B), or damage: Pillow stops there too
            break
    return GifLayout(width, height, tuple(durations))


def _check_pixels(size: tuple[int, int], what: str) -> None:
    w, h = size
    if w * h > MAX_INPUT_PIXELS:
        raise BadImage(f"{what} is {w}x{h} = {w * h:,} pixels, over the limit of "
                       f"{MAX_INPUT_PIXELS:,}; downscale it first")
    if w < 1 or h < 1:
        raise BadImage(f"{what} has no pixels ({w}x{h})")


def _from_array(array: np.ndarray, what: str) -> Image.Image:
    """HxW or HxWxC arrays: uint8 as is, uint16 over 0..65535, floats over 0..1."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise BadImage(f"{what}: expected an HxW, HxWx3 or HxWx4 array, got shape {a.shape}")
    _check_pixels((a.shape[1], a.shape[0]), what)
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.uint16:
        a = (a.astype(np.float64) / 65535.0 * 255.0).round().astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise BadImage(f"{what}: array has NaN or infinite values")
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    else:
        raise BadImage(f"{what}: unsupported array dtype {a.dtype} (use uint8, uint16 or float)")
    return Image.fromarray(a)


def to_rgb(img: Image.Image, what: str = "image") -> Image.Image:
    """Any Pillow mode -> RGB, with EXIF orientation applied and alpha composited on white."""
    _check_pixels(img.size, what)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not make a good picture unusable
        pass
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit/32-bit grayscale: Pillow's convert('L') clips instead of scaling
        a = np.asarray(img, dtype=np.float64)
        peak = a.max(initial=0.0)
        if mode.startswith("I;16"):
            top = 65535.0
        elif mode == "F" and peak <= 1.0:
            top = 1.0
        else:  # 32-bit "I" holds 16-bit files on some Pillow versions, 8-bit data on others
            top = 255.0 if peak <= 255 else 65535.0
        a = np.clip(a / top, 0.0, 1.0)
        return Image.fromarray((a * 255.0).round().astype(np.uint8)).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    except (ValueError, OSError) as exc:
        raise BadImage(f"{what} has an unsupported mode {mode!r} ({exc})") from None


# --------------------------------------------------------------------------- sizes and tensors


def resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to (w, h) with a filter suited to the direction (Lanczos antialiases down)."""
    if img.size == tuple(size):
        return img
    return img.resize(size, Image.Resampling.LANCZOS)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 tensor (1, 3, H, W) in [0, 1]."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """Tensor (1, 3, H, W) or (3, H, W) in [0, 1] -> RGB PIL image (clamped, rounded)."""
    t = tensor.detach()
    if t.ndim == 4:
        t = t[0]
    a = (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(a, "RGB")


# --------------------------------------------------------------------------- writing


def check_output_path(path: Union[str, os.PathLike], formats: Iterable[str] = OUTPUT_FORMATS) -> Path:
    """Fail early (before any work) if ``path`` cannot receive an image of a known format."""
    path = Path(path)
    kinds = ", ".join(sorted(set(formats)))
    if path.is_dir():
        raise BadOutput(f"output {str(path)!r} is a folder; give the image's file name, such as "
                        f"{str(path / 'out.png')!r}")
    if not path.suffix:
        raise BadOutput(f"output {str(path)!r} has no file extension, so its format is unknown; "
                        f"end the name with one of {kinds} (such as {str(path) + '.png'!r})")
    if path.suffix.lower() not in formats:
        raise BadOutput(f"output {str(path)!r}: {path.suffix!r} is not an image format nstyle "
                        f"writes; use one of {kinds}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BadOutput(f"output folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadOutput(f"output folder {str(folder)!r} is not writable")
    return path


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_image(img: Image.Image, path: Union[str, os.PathLike]) -> Path:
    """Save atomically in the format given by the extension (png, jpg/jpeg, webp)."""
    path = check_output_path(path)
    fmt = OUTPUT_FORMATS[path.suffix.lower()]
    params: dict[str, Any] = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    _atomic_write(path, lambda f: img.save(f, format=fmt, **params))
    return path


def encode_image(img: Image.Image, suffix: str) -> bytes:
    """``img`` encoded as ``save_image`` would write it to a file ending in ``suffix``
    (for results made in one process and written by another)."""
    fmt = OUTPUT_FORMATS[suffix.lower()]
    params: dict[str, Any] = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def save_bytes(data: bytes, path: Union[str, os.PathLike]) -> Path:
    """Write ``data`` (an encoded image, a record) to ``path`` atomically."""
    path = Path(path)
    _atomic_write(path, lambda f: f.write(data))
    return path


def save_json(data: Any, path: Union[str, os.PathLike]) -> Path:
    path = Path(path)
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))
    return path


def save_progression(frames: list[Image.Image], path: Union[str, os.PathLike],
                     frame_size: int = 256) -> Path:
    """Frames as one horizontal strip (.png) or a looping animation (.gif).

    Every frame is drawn on one canvas of the last frame's shape (the output's), at most
    ``frame_size`` on its longest side: a coarse-to-fine run's earlier frames are smaller
    (they are scaled up to it) and a frame of another shape is fitted inside it on white.
    A GIF's frames must all have its screen's size: a larger one is cut to its top-left
    corner by decoders and one of another size garbles the rest."""
    if not frames:
        raise ValueError("no frames to write")
    path = check_output_path(path, formats=(".png", ".gif"))
    last = frames[-1]
    canvas = fit_size(*last.size, min(frame_size, max(last.size)))
    thumbs = [_on_canvas(f, canvas) for f in frames]
    if path.suffix.lower() == ".gif":
        def write(f):
            thumbs[0].save(f, format="GIF", save_all=True, append_images=thumbs[1:],
                           duration=200, loop=0)
    else:
        w, h = canvas
        strip = Image.new("RGB", (w * len(thumbs), h), "white")
        for i, t in enumerate(thumbs):
            strip.paste(t, (i * w, 0))
        def write(f):
            strip.save(f, format="PNG")
    _atomic_write(path, write)
    return path


def _on_canvas(frame: Image.Image, canvas: tuple[int, int]) -> Image.Image:
    """``frame`` resized to exactly ``canvas`` (w, h) when it has the canvas's shape (up to
    a pixel of rounding), else fitted inside it, centred on white."""
    w, h = canvas
    scale = min(w / frame.width, h / frame.height)
    inner = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
    if w - inner[0] <= 1 and h - inner[1] <= 1:
        return resize(frame.convert("RGB"), canvas)
    board = Image.new("RGB", canvas, "white")
    board.paste(resize(frame.convert("RGB"), inner), ((w - inner[0]) // 2, (h - inner[1]) // 2))
    return board


def load_mask(source: ImageSource, what: str = "mask") -> torch.Tensor:
    """A mask image (any mode, any size) as a (1, 1, H, W) float tensor in [0, 1].

    Colour masks count by their luminance; transparency is composited on white (so a
    transparent PNG means "everywhere"). An all-black mask is refused: it selects nothing.
    """
    img = load_image(source, what).convert("L")
    t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).float() / 255.0
    t = t.reshape(1, 1, img.height, img.width)
    if float(t.max()) < 1.0 / 255.0:
        named = f"{what} {os.fspath(source)!r}" if isinstance(source, (str, os.PathLike)) else what
        raise BadImage(f"{named} is all black: it selects no pixel (white marks the region)")
    return t
