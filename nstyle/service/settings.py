"""What one server accepts and how it runs: data folder, token, workers and limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MB = 1024 * 1024
#: the names a loopback server answers to (the Host header) when it has no token
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServiceSettings:
    #: where the SQLite records and the job folders live (created if missing)
    data_dir: Path = Path("nstyle-data")
    #: when set, every API call needs ``Authorization: Bearer <token>``
    token: Optional[str] = None
    #: without a token, a request must be addressed to one of ``LOOPBACK_NAMES`` or of
    #: these (its Host header), and a browser's request must come from the server's own
    #: page or from one of these names (its Origin): so that a web page the user visits
    #: cannot submit jobs, nor read them through a name of its own that resolves to
    #: 127.0.0.1 (DNS rebinding). The names under which clients reach the server.
    public_hosts: tuple[str, ...] = ()
    #: jobs that run at the same time; 1 = one job at a time on the device, which is what
    #: a single GPU or a small CPU wants (two runs would only slow each other down)
    workers: int = 1
    #: largest accepted upload, per image file
    max_upload_bytes: int = 20 * MB
    #: largest accepted image, in pixels (checked from the header, before decoding)
    max_pixels: int = 25_000_000
    #: most style images in one job
    max_styles: int = 5
    #: most jobs waiting in the queue (running ones not counted); more are refused
    max_queue: int = 20
    #: largest output size (longest side) a job may ask for; a service limit on top of
    #: the engine's own range, because one huge job would hold the device for hours
    max_size: int = 2048
    #: most optimizer iterations one job may ask for, over all its scales and the scale
    #: mixing (the engine has no upper bound of its own)
    max_iterations: int = 2000
    #: most work one job may ask for: the sum over its scales of output pixels x iterations,
    #: in millions (a default 2048 px run is about 290)
    max_megapixel_iterations: float = 400.0
    #: most pixels in all the images of one request together (read from their headers,
    #: before anything is decoded); bounds the memory one request can make the server use
    max_request_pixels: int = 50_000_000
    #: longest text field (an option's value) a request may carry, in characters
    max_field_chars: int = 256
    #: submissions whose images are decoded at the same time; more wait their turn, so N
    #: concurrent requests cannot hold N requests' worth of decoded pixels at once
    decode_slots: int = 1
    #: request bodies read and checked at the same time (each holds its small parts in
    #: memory, its files on disk, and one file whole while it is checked); more wait, up
    #: to ``form_wait_seconds``, then are answered 503
    form_slots: int = 4
    form_wait_seconds: float = 30.0
    #: GiB a job may use (None: the memory available when it starts); clients cannot set
    #: the memory options, the server does
    memory_limit_gib: Optional[float] = None
    #: seconds between two preview images of a running job
    preview_seconds: float = 1.0
    #: image formats accepted as uploads (Pillow format names)
    formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
    #: a Ray address (auto, ray://HOST:PORT, local): jobs run as Ray tasks there, up to
    #: ``workers`` at a time, instead of in this process (``nstyle.exec.ray``)
    cluster: Optional[str] = None
    #: video jobs (POST /api/videos): the largest clip upload, its longest duration, most
    #: frames and largest frame (pixels, from the stream's header before decoding), the
    #: largest output size, and the most iterations over every frame of the clip
    max_video_upload_bytes: int = 50 * MB
    max_video_seconds: float = 10.0
    max_video_frames: int = 300
    max_video_pixels: int = 1920 * 1088
    max_video_size: int = 512
    max_video_iterations: int = 20_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        object.__setattr__(self, "public_hosts", tuple(self.public_hosts))
        if self.token is not None and (not self.token.isascii() or not self.token.isprintable()
                                       or not self.token or " " in self.token):
            raise ValueError("the token is empty or has spaces or characters a header cannot "
                             "carry: use printable ASCII without spaces, such as python -c 'import "
                             "secrets; print(secrets.token_urlsafe())' makes (or leave it out)")
        for name in self.public_hosts:
            if not name or any(c in name for c in "/ @?#"):
                raise ValueError(f"public host {name!r} is not a host name (such as "
                                 "nstyle.example.org or 192.168.1.5)")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        for name in ("max_upload_bytes", "max_pixels", "max_styles", "max_size", "max_iterations",
                     "max_megapixel_iterations", "max_request_pixels", "max_field_chars",
                     "decode_slots", "form_slots", "max_video_upload_bytes", "max_video_frames", "max_video_pixels", "max_video_size",
                     "max_video_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.max_video_seconds > 0:
            raise ValueError("max_video_seconds must be > 0")
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if self.memory_limit_gib is not None and not self.memory_limit_gib > 0:
            raise ValueError("memory_limit_gib must be > 0")

    @property
    def host_names(self) -> Optional[tuple[str, ...]]:
        """The names a request must be addressed to; None when any will do (a token
        guards the server instead)."""
        return None if self.token is not None else LOOPBACK_NAMES + self.public_hosts

    @property
    def max_files(self) -> int:
        """Image files one request may carry: content, styles, their masks, and the
        keep mask, starting image and scale-mixing pair."""
        return 1 + 2 * self.max_styles + 4

    @property
    def max_request_bytes(self) -> int:
        """Whole request body: every image at its limit, plus room for the option fields."""
        return max(self.max_upload_bytes * self.max_files,
                   self.max_video_upload_bytes + self.max_upload_bytes * self.max_styles) + MB
