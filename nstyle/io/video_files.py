"""Reading and writing clips: video files (PyAV), GIFs (Pillow), folders of frames.

A clip is named by a path, one of:

- a video file (``.mp4``, ``.mov``, ``.mkv``, ``.webm``, ... as input: whatever PyAV's own
  FFmpeg reads), decoded and encoded with PyAV; its frame rate is kept, and its sound is
  copied into a video output (re-encoded only where the output's container cannot hold
  the codec);
- a GIF (Pillow; its frame durations give the rate);
- a folder of frames (``frames/``: its image files in natural order) or a printf pattern
  (``frames/%05d.png``), read with ``nstyle.io.images`` and written as PNG/JPEG/WebP; a
  folder has no rate of its own (``fps``, default 25).

``open_clip`` checks a clip completely before any work (readable, a video stream, at
least one frame, one frame size, not huge) and says what is wrong in one line;
``write_clip`` writes atomically: a temporary file or folder beside the output, renamed
into place only once every frame is in.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

from PIL import Image, ImageSequence

from nstyle.errors import BadImage, BadOption, BadOutput
from nstyle.io.images import (MAX_INPUT_PIXELS, OUTPUT_FORMATS, TooManyFrames, encode_image, load_image,
                              walk_gif)

#: output containers by extension: (PyAV format, video codec, audio codec to re-encode to)
VIDEO_FORMATS = {".mp4": ("mp4", "libx264", "aac"), ".m4v": ("mp4", "libx264", "aac"),
                 ".mov": ("mov", "libx264", "aac"), ".mkv": ("matroska", "libx264", "aac"),
                 ".webm": ("webm", "libvpx-vp9", "libopus")}
#: audio codecs each container takes as they are (others are re-encoded)
AUDIO_COPY = {"mp4": {"aac", "mp3", "alac", "ac3", "opus", "flac"},
              "mov": {"aac", "mp3", "alac", "ac3", "pcm_s16le", "pcm_s24le"},
              "matroska": None,  # anything
              "webm": {"opus", "vorbis"}}
#: image files a folder of frames may hold (what Pillow reads)
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_FPS = Fraction(25)
#: a frame pattern's default name inside an output folder
DEFAULT_PATTERN = "%05d.png"
_PRINTF = re.compile(r"%(0?)(\d*)d")

Source = Union[str, os.PathLike]


def import_av():
    """PyAV, or a one-line message saying how to get it (it is the video extra)."""
    try:
        import av
    except ImportError:
        raise BadOption("video needs PyAV and OpenCV: pip install 'nstyle[video]'") from None
    return av


@dataclass(frozen=True)
class ClipInfo:
    """What a clip is, read before any work."""

    kind: str  # "video", "gif" or "frames"
    frames: int
    fps: Fraction
    width: int
    height: int
    audio: Optional[str] = None  # the sound's codec, when a video file has sound

    @property
    def seconds(self) -> float:
        return float(self.frames / self.fps)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "frames": self.frames, "fps": _fps_text(self.fps),
                "width": self.width, "height": self.height, "seconds": round(self.seconds, 3),
                "audio": self.audio}


def _fps_text(fps: Fraction) -> str:
    return str(fps.numerator) if fps.denominator == 1 else f"{fps.numerator}/{fps.denominator}"


def parse_fps(value: Union[str, float, Fraction]) -> Fraction:
    """'25', '29.97' or '30000/1001' -> a Fraction in (0, 1000]."""
    try:
        fps = Fraction(str(value).strip()).limit_denominator(100_000)
    except (ValueError, ZeroDivisionError):
        raise BadOption(f"fps must be a number such as 25, 29.97 or 30000/1001, got {value!r}") from None
    if not 0 < fps <= 1000:
        raise BadOption(f"fps must be in (0, 1000], got {value!r}")
    return fps


class Clip:
    """An input clip, checked: ``info`` says what it is, ``frames()`` decodes it."""

    def __init__(self, path: Path, info: ClipInfo, files: Optional[list[Path]] = None,
                 label: Optional[str] = None, container: Optional[str] = None) -> None:
        self.path = path
        self.info = info
        self._files = files  # a folder's frames, in order
        self.label = label or str(path)  # what messages call it
        self.container = container  # the PyAV format to read it as (None: FFmpeg guesses)

    def frames(self) -> Iterator[Image.Image]:
        """Every frame as an RGB PIL image, in order (a damaged frame raises BadImage)."""
        if self.info.kind == "frames":
            for f in self._files or []:
                yield self._same_size(load_image(f, "frame"), f)
        elif self.info.kind == "gif":
            yield from self._gif_frames()
        else:
            yield from self._video_frames()

    def _same_size(self, img: Image.Image, where: Path) -> Image.Image:
        if img.size != (self.info.width, self.info.height):
            raise BadImage(f"frame {str(where)!r} is {img.width}x{img.height}, but the clip's first "
                           f"frame is {self.info.width}x{self.info.height}; all frames must have one size")
        return img

    def _gif_frames(self) -> Iterator[Image.Image]:
        with Image.open(self.path) as gif:
            for frame in ImageSequence.Iterator(gif):
                yield frame.convert("RGB")

    def _video_frames(self) -> Iterator[Image.Image]:
        av = import_av()
        try:
            with av.open(str(self.path), format=self.container) as container:
                for frame in container.decode(video=0):
                    yield Image.fromarray(frame.to_ndarray(format="rgb24"), "RGB")
        except av.FFmpegError as exc:
            raise BadImage(f"video {self.label!r} is damaged or truncated ({exc})") from None

    def digest(self) -> str:
        """SHA-256 of the clip's bytes (every frame file's, in order, for a folder)."""
        h = hashlib.sha256()
        for f in self._files if self.info.kind == "frames" else [self.path]:
            h.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()


# --------------------------------------------------------------------------- reading


def open_clip(source: Source, fps: Optional[Fraction] = None,
              max_pixels: int = MAX_INPUT_PIXELS) -> Clip:
    """Check the clip at ``source`` and return it, or raise ``BadImage`` with one line.
    ``fps``: the rate of a folder of frames (ignored for files, which have their own)."""
    text = os.fspath(source)
    path = Path(text)
    if not text:
        raise BadImage("input is empty: give a video, a GIF or a folder of frames")
    if "%" in path.name:
        return _open_frames(path.parent, _pattern_regex(path.name), text, fps or DEFAULT_FPS, max_pixels)
    if not path.exists():
        raise BadImage(f"input {text!r} does not exist")
    if path.is_dir():
        return _open_frames(path, None, text, fps or DEFAULT_FPS, max_pixels)
    if path.suffix.lower() == ".gif":
        return _open_gif(path, max_pixels)
    return _open_video(path, max_pixels)


def _check_frame_size(width: int, height: int, what: str, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise BadImage(f"{what} has frames of no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise BadImage(f"{what} has {width}x{height} = {width * height:,} pixels per frame, over "
                       f"the limit of {max_pixels:,}; downscale it first")


def open_upload(path: Path, label: str, max_pixels: int, max_frames: Optional[int] = None) -> Clip:
    """A clip a client uploaded (stored at ``path``, called ``label`` in messages), read only
    as one of the containers of ``sniff_container``: FFmpeg is never left to guess, since
    some of its formats (playlists, concatenation lists) would open other files or URLs.
    ``max_frames``: refuse a clip of more frames (``TooManyFrames``), counting no further."""
    kind = sniff_container(path)
    if kind is None:
        raise BadImage(f"{label!r} is not a video this server takes (MP4/MOV, MKV/WebM, AVI or GIF)")
    if kind == "gif":
        clip = _open_gif(path, max_pixels, label, max_frames)
    else:
        clip = _open_video(path, max_pixels, label, kind, max_frames)
    return clip


#: containers by their first bytes: (offset, magic, PyAV format)
_MAGIC = ((4, b"ftyp", "mp4"), (4, b"moov", "mp4"), (4, b"mdat", "mp4"), (4, b"wide", "mp4"),
          (0, b"\x1aE\xdf\xa3", "matroska"), (8, b"AVI ", "avi"), (0, b"GIF87a", "gif"),
          (0, b"GIF89a", "gif"))


def sniff_container(path: Path) -> Optional[str]:
    """'mp4' (also MOV), 'matroska' (also WebM), 'avi' or 'gif' from a file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    for offset, magic, kind in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind
    return None


def _open_video(path: Path, max_pixels: int, label: Optional[str] = None,
                container_format: Optional[str] = None, max_frames: Optional[int] = None) -> Clip:
    av = import_av()
    what = f"video {label or str(path)!r}"
    try:
        with av.open(str(path), format=container_format) as container:
            if not container.streams.video:
                kinds = sorted({s.type for s in container.streams}) or ["nothing"]
                raise BadImage(f"{what} has no video stream (it holds {', '.join(kinds)})")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            _check_frame_size(width, height, what, max_pixels)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
            # counted from the packets (no decoding): the header's count may be missing;
            # up to one past the limit, however many a file holds
            frames = 0
            for packet in container.demux(stream):
                frames += 1 if packet.size else 0
                if max_frames is not None and frames > max_frames:
                    raise TooManyFrames(f"{what} has at least {frames:,} frames, over the "
                                        f"limit of {max_frames:,}")
    except av.FFmpegError as exc:
        if path.stat().st_size == 0:
            raise BadImage(f"{what} is empty (0 bytes)") from None
        raise BadImage(f"{what} is not a video PyAV can read ({exc})") from None
    if frames == 0:
        raise BadImage(f"{what} has no frames")
    fps = Fraction(rate).limit_denominator(100_000) if rate else DEFAULT_FPS
    return Clip(path, ClipInfo("video", frames, fps, width, height, audio), label=label,
                container=container_format)


def _open_gif(path: Path, max_pixels: int, label: Optional[str] = None,
              max_frames: Optional[int] = None) -> Clip:
    what = f"GIF {label or str(path)!r}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as gif:
                if gif.format != "GIF":
                    raise BadImage(f"{what} is not a GIF (Pillow reads it as {gif.format})")
                width, height = gif.size
                _check_frame_size(width, height, what, max_pixels)
        # the frames counted from the blocks, without decoding one (Pillow's seek decodes
        # each frame over the last: 15,000 one-pixel frames took 55 s), up to one past
        # the limit
        durations = walk_gif(path.read_bytes(), what, max_frames).durations
    except BadImage:
        raise
    except Exception as exc:
        raise BadImage(f"{what} is not a GIF Pillow can read ({exc})") from None
    if not durations:
        raise BadImage(f"{what} has no frames")
    known = [d for d in durations if d > 0]
    # browsers play delays under 20 ms at 100 ms; a GIF without delays is 10 fps
    mean = sum(known) / len(known) if known else 100
    fps = Fraction(1000) / Fraction(mean).limit_denominator(1000)
    return Clip(path, ClipInfo("gif", len(durations), fps, width, height), label=label)


def _pattern_regex(name: str) -> re.Pattern:
    """``%05d.png`` -> a regex of the names it stands for (the number in group 1)."""
    if len(_PRINTF.findall(name)) != 1 or name.replace("%%", "").count("%") != 1:
        raise BadOption(f"frame pattern {name!r}: use one printf number such as %05d or %d "
                        "(e.g. frames/%05d.png)")
    match = _PRINTF.search(name)
    width = match.group(2)
    digits = rf"(\d{{{width},}})" if match.group(1) and width else r"(\d+)"
    return re.compile(re.escape(name[:match.start()]) + digits + re.escape(name[match.end():]) + "$")


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _frame_files(folder: Path, pattern: Optional[re.Pattern], what: str) -> list[Path]:
    if not folder.is_dir():
        raise BadImage(f"{what}: folder {str(folder)!r} does not exist")
    files = [f for f in folder.iterdir() if f.is_file()]
    if pattern is not None:
        numbered = [(int(m.group(1)), f) for f in files if (m := pattern.match(f.name))]
        return [f for _, f in sorted(numbered)]
    return sorted((f for f in files if f.suffix.lower() in FRAME_EXTENSIONS),
                  key=lambda f: _natural_key(f.name))


def _open_frames(folder: Path, pattern: Optional[re.Pattern], text: str, fps: Fraction,
                 max_pixels: int) -> Clip:
    what = f"frames {text!r}"
    files = _frame_files(folder, pattern, what)
    if not files:
        raise BadImage(f"{what}: no frames found (image files: {', '.join(FRAME_EXTENSIONS)})")
    size = None
    for f in files:  # headers only: a folder of mixed sizes is refused before any work
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(f) as img:
                    frame_size = img.size
        except Exception:
            load_image(f, "frame")  # raises BadImage with the still image's message
            raise BadImage(f"frame {str(f)!r} is not an image Pillow can read") from None
        if size is None:
            size = frame_size
            _check_frame_size(*size, what, max_pixels)
        elif frame_size != size:
            raise BadImage(f"frame {str(f)!r} is {frame_size[0]}x{frame_size[1]}, but {str(files[0])!r} "
                           f"is {size[0]}x{size[1]}; all frames must have one size")
    return Clip(folder, ClipInfo("frames", len(files), fps, size[0], size[1]), files)


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class ClipOutput:
    """Where a clip goes, checked: ``path`` is the file, or the folder of a frames output."""

    kind: str  # "video", "gif" or "frames"
    path: Path
    pattern: str = DEFAULT_PATTERN  # a frames output's file names
    text: str = ""  # as the user gave it


def check_clip_output(target: Source, overwrite: bool = False) -> ClipOutput:
    """Fail early (before any work) if ``target`` cannot receive a clip: an unknown
    extension, a missing or read-only folder, or an existing output without ``overwrite``."""
    text = os.fspath(target)
    path = Path(text)
    if "%" in path.name:
        _pattern_regex(path.name)
        if Path(path.name.replace("%", "")).suffix.lower() not in OUTPUT_FORMATS:
            raise BadOutput(f"output {text!r}: frames are written as "
                            f"{', '.join(sorted(OUTPUT_FORMATS))}; e.g. out/%05d.png")
        out = ClipOutput("frames", path.parent, path.name, text)
    elif path.suffix.lower() in VIDEO_FORMATS:
        out = ClipOutput("video", path, text=text)
    elif path.suffix.lower() == ".gif":
        out = ClipOutput("gif", path, text=text)
    elif not path.suffix or text.endswith(("/", os.sep)) or path.is_dir():
        out = ClipOutput("frames", path, DEFAULT_PATTERN, text)
    else:
        raise BadOutput(f"output {text!r}: unsupported extension {path.suffix!r}; use a video "
                        f"({', '.join(VIDEO_FORMATS)}), .gif, a folder or a pattern such as out/%05d.png")
    _check_destination(out, overwrite)
    if out.kind == "video":
        codec = VIDEO_FORMATS[path.suffix.lower()][1]
        if codec not in import_av().codecs_available:
            raise BadOutput(f"output {text!r}: this PyAV has no {codec} encoder; write another format")
    return out


def _check_destination(out: ClipOutput, overwrite: bool) -> None:
    parent = out.path.parent  # the file's folder, or the frames folder's parent
    if not parent.is_dir():
        raise BadOutput(f"output folder {str(parent)!r} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadOutput(f"output folder {str(parent)!r} is not writable")
    if out.kind != "frames":
        if out.path.is_dir():
            raise BadOutput(f"output {out.text!r} is a folder; give a file name such as out.mp4")
        if out.path.exists() and not overwrite:
            raise BadOutput(f"output {out.text!r} exists; add --overwrite to replace it")
        return
    if out.path.exists() and not out.path.is_dir():
        raise BadOutput(f"output {out.text!r} is a file, not a folder for frames")
    if out.path.is_dir() and any(out.path.iterdir()):
        if not overwrite:
            raise BadOutput(f"output folder {str(out.path)!r} exists and is not empty; add "
                            "--overwrite to replace it")
        stray = [f for f in out.path.iterdir() if not f.is_file() or f.suffix.lower() not in FRAME_EXTENSIONS]
        if stray:  # --overwrite replaces a folder of frames, never one with other things in it
            raise BadOutput(f"output folder {str(out.path)!r} holds more than frames ({stray[0].name!r}); "
                            "choose another output")


def write_clip(frames: Iterable[Image.Image], out: ClipOutput, fps: Fraction,
               audio_from: Optional[Clip] = None) -> dict:
    """Write ``frames`` (RGB PIL images of one size) to ``out`` atomically; returns what was
    written: frames, fps, size, and what became of the input's sound."""
    if out.kind == "frames":
        return _write_frames(frames, out, fps)
    suffix = out.path.suffix
    fd, tmp = tempfile.mkstemp(dir=out.path.parent, prefix=f".{out.path.name}.", suffix=suffix)
    os.close(fd)
    try:
        if out.kind == "gif":
            info = _write_gif(frames, Path(tmp), fps)
        else:
            info = _write_video(frames, Path(tmp), suffix.lower(), fps, audio_from)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return info


def _write_gif(frames: Iterable[Image.Image], path: Path, fps: Fraction) -> dict:
    images = list(frames)
    if not images:
        raise BadImage("no frames to write")
    # GIF delays are in 10 ms steps, and browsers play delays under 20 ms slower
    duration = max(20, round(100 / float(fps)) * 10)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=duration, loop=0)
    return {"frames": len(images), "fps": _fps_text(Fraction(1000, duration)),
            "size": list(images[0].size), "audio": None}


def _write_frames(frames: Iterable[Image.Image], out: ClipOutput, fps: Fraction) -> dict:
    suffix = Path(out.pattern.replace("%", "")).suffix
    tmp = Path(tempfile.mkdtemp(dir=out.path.parent if str(out.path.parent) else ".",
                                prefix=f".{out.path.name}."))
    try:
        n, size = 0, None
        for n, frame in enumerate(frames, start=1):
            (tmp / (out.pattern % (n - 1))).write_bytes(encode_image(frame, suffix))
            size = list(frame.size)
        if not n:
            raise BadImage("no frames to write")
        os.chmod(tmp, 0o755)
        _swap_folder(tmp, out.path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"frames": n, "fps": _fps_text(fps), "size": size, "audio": None}


def _swap_folder(new: Path, target: Path) -> None:
    """``new`` takes ``target``'s name; an old (checked: frames only) folder goes after."""
    if target.is_dir():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def _even(n: int) -> int:
    return max(2, n - n % 2)


def _write_video(frames: Iterable[Image.Image], path: Path, suffix: str, fps: Fraction,
                 audio_from: Optional[Clip]) -> dict:
    """H.264 (or VP9 for .webm) in yuv420p, which every player and browser plays; that
    format needs even sides, so an odd last row or column is dropped. The input's sound,
    when there is one, is interleaved with the video as it is encoded."""
    av = import_av()
    fmt, codec, audio_codec = VIDEO_FORMATS[suffix]
    n, size, audio_note = 0, None, None
    with av.open(str(path), "w", format=fmt) as container:
        stream = None
        audio = _AudioCopy(container, audio_from, fmt, audio_codec) if audio_from is not None \
            and audio_from.info.audio else None
        for n, frame in enumerate(frames, start=1):
            if stream is None:
                size = [_even(frame.width), _even(frame.height)]
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
                if codec == "libx264":  # visually lossless for stylized frames; plays anywhere
                    stream.options = {"crf": "18", "preset": "medium"}
                if audio is not None:
                    audio.add_stream()
            if list(frame.size) != [size[0] + frame.width % 2, size[1] + frame.height % 2]:
                raise BadImage(f"frame {n} is {frame.width}x{frame.height}, not the first frame's size")
            picture = frame.crop((0, 0, size[0], size[1])) if frame.size != tuple(size) else frame
            vf = av.VideoFrame.from_image(picture)
            vf.pts = n - 1
            if audio is not None:
                audio.mux_until(float((n - 1) / fps))
            for packet in stream.encode(vf):
                container.mux(packet)
        if stream is None:
            raise BadImage("no frames to write")
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            audio.mux_until(float("inf"))
            audio_note = audio.note
    return {"frames": n, "fps": _fps_text(fps), "size": size, "audio": audio_note}


class _AudioCopy:
    """The input's first audio stream into an output container: its packets as they are
    when the container takes the codec, else decoded and re-encoded."""

    def __init__(self, container, clip: Clip, fmt: str, fallback_codec: str) -> None:
        self.av = import_av()
        self.container = container
        self.source = self.av.open(str(clip.path), format=clip.container)
        self.source_stream = self.source.streams.audio[0]
        allowed = AUDIO_COPY.get(fmt)
        self.copy = allowed is None or self.source_stream.codec_context.name in allowed
        self.fallback_codec = fallback_codec
        self.stream = None
        self.pending: Iterator = iter(())
        self.note = None
        self.label = clip.label

    def add_stream(self) -> None:
        """Called once the video stream exists (so the video is stream 0)."""
        src = self.source_stream
        if self.copy:
            self.stream = self.container.add_stream_from_template(src)
            self.pending = (p for p in self.source.demux(src) if p.dts is not None)
            self.note = f"copied ({src.codec_context.name})"
        else:
            rate = src.codec_context.sample_rate or 48000
            self.stream = self.container.add_stream(self.fallback_codec, rate=48000 if
                                                    self.fallback_codec == "libopus" else rate)
            self.pending = self._reencoded()
            self.note = f"re-encoded {src.codec_context.name} -> {self.fallback_codec}"
        self._next = next(self.pending, None)

    def _reencoded(self) -> Iterator:
        for frame in self.source.decode(self.source_stream):
            frame.pts = None  # the encoder counts samples itself
            yield from self.stream.encode(frame)
        yield from self.stream.encode(None)

    def mux_until(self, seconds: float) -> None:
        """Mux the sound up to ``seconds`` (every packet that starts before it)."""
        try:
            while self._next is not None:
                p = self._next
                start = float(p.pts * p.time_base) if p.pts is not None and p.time_base else 0.0
                if start > seconds:
                    return
                if self.copy:
                    p.stream = self.stream
                self.container.mux(p)
                self._next = next(self.pending, None)
        except self.av.FFmpegError as exc:
            raise BadImage(f"the sound of {self.label!r} cannot be copied ({exc})") from None
        finally:
            if self._next is None:
                self.source.close()
