"""Files whose decoding would take far longer than their pixels need are refused before it
starts: a JPEG of many scans, headers of a million segments, a clip whose frames are
counted one past the limit and no further, and without decoding one."""

from __future__ import annotations

import io
import re
import struct
import zlib
from fractions import Fraction

import pytest
from PIL import Image, ImageFile

from nstyle.io import images
from nstyle.io import video_files as videoio
from nstyle.errors import BadImage


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def with_extra_scans(jpeg: bytes, n: int) -> bytes:
    """A progressive JPEG with its last scan repeated ``n`` more times before its EOI: a
    valid file for libjpeg (a warning per scan), and each scan a full pass to decode."""
    sos = [m.start() for m in re.finditer(rb"\xff\xda", jpeg)]
    last = jpeg[sos[-1]:jpeg.rindex(b"\xff\xd9")]
    return jpeg[:jpeg.rindex(b"\xff\xd9")] + last * n + b"\xff\xd9"


@pytest.fixture(scope="module")
def progressive(content_img) -> bytes:
    return encode(content_img, "JPEG", progressive=True)


def test_a_jpeg_of_many_scans_is_refused_before_decoding(progressive):
    assert progressive.count(b"\xff\xda") == 10  # libjpeg's progressive script
    assert images.decode_image(with_extra_scans(progressive, 22)).size == (64, 43)
    bomb = with_extra_scans(progressive, 23)
    Image.open(io.BytesIO(bomb)).load()  # Pillow alone decodes it, scan after scan
    with pytest.raises(BadImage, match="more than 32 scans"):
        images.decode_image(bomb, "photo")


def gif_header(data: bytes) -> int:
    """Bytes of a GIF's header and global palette."""
    return 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@pytest.mark.parametrize("fmt, flood, match", [
    ("JPEG", lambda d: d[:2] + b"\xff\xfe\x00\x03x" * 1200 + d[2:], "more than 1,000 segments"),
    ("PNG", lambda d: d[:33] + chunk(b"zzAz", b"") * 20_000 + d[33:], "more than 20,000 chunks"),
    ("GIF", lambda d: d[:gif_header(d)] + b"\x21\xfe" + b"\x01x" * 10_001 + b"\x00" + d[gif_header(d):],
     "more than 10,000 extension blocks"),
    ("GIF", lambda d: d[:gif_header(d)] + b"\x21\xfe\x00" * 10_001 + d[gif_header(d):],
     "more than 10,000 extension blocks"),
])
def test_headers_of_too_many_parts_are_refused_before_pillow_parses_them(content_img, fmt, flood, match):
    plain = encode(content_img.convert("P") if fmt == "GIF" else content_img, fmt)
    images.decode_image(plain)
    bomb = flood(plain)
    Image.open(io.BytesIO(bomb)).load()  # Pillow reads it, a part at a time
    with pytest.raises(BadImage, match=match):
        images.decode_image(bomb)


def gif(n: int, size=(32, 24)) -> bytes:
    frames = [Image.new("P", size, i % 200) for i in range(n)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:],
                  duration=[40] * n, loop=0, optimize=False, disposal=1)


def test_gif_frames_are_counted_from_their_blocks_not_decoded(tmp_path, monkeypatch):
    path = tmp_path / "a.gif"
    path.write_bytes(gif(40))

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("a frame was decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    info = videoio.open_clip(path).info
    assert (info.frames, info.fps, info.width, info.height) == (40, Fraction(25), 32, 24)
    with pytest.raises(images.TooManyFrames, match="at least 31 frames, over the limit of 30") as exc:
        videoio.open_upload(path, "a.gif", 10**6, max_frames=30)
    assert exc.value.http_status == 413


def test_gif_sub_blocks_are_bounded(monkeypatch):
    monkeypatch.setattr(images, "MAX_GIF_DATA_BLOCKS", 50)
    data = gif(3, size=(200, 200))
    assert len(images.walk_gif(data).durations) == 3
    # the same image data re-cut into 1-byte sub-blocks: the walk stops at the limit
    layout = gif(1, size=(64, 64))
    start = layout.index(b"\x2c") + 10 + 1
    end = len(layout) - 2  # before the block terminator and the trailer
    blocks, pos, payload = layout[start:end], 0, b""
    while pos < len(blocks):
        payload += blocks[pos + 1:pos + 1 + blocks[pos]]
        pos += blocks[pos] + 1
    sliced = layout[:start] + b"".join(b"\x01" + payload[i:i + 1] for i in range(len(payload))) + b"\x00;"
    assert len(payload) > 50
    with pytest.raises(BadImage, match="more than 50 data blocks"):
        images.walk_gif(sliced)


def test_video_packets_are_counted_one_past_the_limit(tmp_path):
    pytest.importorskip("av")
    from tests.support.clips import write_video

    import numpy as np

    frames = [np.full((24, 32, 3), i * 20, np.uint8) for i in range(10)]
    path = write_video(tmp_path / "c.mp4", frames)
    assert videoio.open_upload(path, "c.mp4", 10**6, max_frames=10).info.frames == 10
    with pytest.raises(images.TooManyFrames, match="at least 4 frames, over the limit of 3"):
        videoio.open_upload(path, "c.mp4", 10**6, max_frames=3)
