import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from nstyle.io import images
from nstyle.errors import BadImage, BadOutput


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (valid CRC) with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_rgba_is_composited_on_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 255          # red ...
    a[:2, :, 3] = 255        # ... opaque on the top half, transparent below
    p = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(p)
    img = images.load_image(p)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 0, 0)
    assert img.getpixel((0, 3)) == (255, 255, 255)


def test_la_and_palette_with_transparency(tmp_path):
    la = Image.new("LA", (2, 2), (0, 0))  # black, fully transparent
    p = tmp_path / "la.png"
    la.save(p)
    assert images.load_image(p).getpixel((0, 0)) == (255, 255, 255)

    pal = Image.new("P", (2, 2), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p2 = tmp_path / "pal.png"
    pal.save(p2)
    assert images.load_image(p2).getpixel((1, 1)) == (10, 200, 30)
    pal.info["transparency"] = 1
    p3 = tmp_path / "pal_t.png"
    pal.save(p3, transparency=1)
    assert images.load_image(p3).getpixel((1, 1)) == (255, 255, 255)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 32896], [65535, 16448]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)
    img = images.load_image(p)
    assert img.getpixel((0, 0)) == (0, 0, 0)
    assert img.getpixel((1, 0)) == (128, 128, 128)
    assert img.getpixel((0, 1)) == (255, 255, 255)
    assert img.getpixel((1, 1)) == (64, 64, 64)


def test_cmyk_and_grayscale_jpegs(tmp_path):
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # red in CMYK
    p = tmp_path / "cmyk.jpg"
    cmyk.save(p, quality=100)
    r, g, b = images.load_image(p).getpixel((1, 1))
    assert r > 200 and g < 60 and b < 60
    gray = Image.new("L", (3, 3), 77)
    p2 = tmp_path / "gray.jpg"
    gray.save(p2, quality=100)
    assert images.load_image(p2).getpixel((1, 1)) == pytest.approx((77, 77, 77), abs=2)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif)
    assert images.load_image(p).size == (20, 40)


def test_arrays_of_each_dtype():
    assert images.load_image(np.full((3, 5, 3), 7, np.uint8)).size == (5, 3)
    assert images.load_image(np.full((3, 5), 65535, np.uint16)).getpixel((0, 0)) == (255, 255, 255)
    assert images.load_image(np.full((2, 2, 3), 0.5, np.float32)).getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(BadImage, match="shape"):
        images.load_image(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(BadImage, match="NaN"):
        images.load_image(np.full((2, 2), np.nan))


@pytest.mark.parametrize("make, match", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("hello, not an image"), "not an image"),
    (lambda p: p.write_bytes(_png_header_only(10_000, 10_000)), "over the limit"),
    (lambda p: p.mkdir(), "folder"),
])
def test_bad_files_raise_bad_image(tmp_path, make, match):
    p = tmp_path / "input.png"
    make(p)
    with pytest.raises(BadImage, match=match):
        images.load_image(p, "content image")


def test_truncated_file(tmp_path, content_img):
    p = tmp_path / "full.jpg"
    content_img.save(p, quality=90)
    data = p.read_bytes()
    t = tmp_path / "cut.jpg"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="truncated"):
        images.load_image(t)


def test_decompression_bomb_warning_is_an_error(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 > 1000: Pillow warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadImage, match="too large"):
            images.load_image(p)


def test_fit_size_keeps_aspect_ratio():
    assert images.fit_size(1024, 768, 512) == (512, 384)
    assert images.fit_size(300, 900, 90) == (30, 90)


def test_tensor_round_trip(content_img):
    t = images.to_tensor(content_img)
    assert t.shape == (1, 3, content_img.height, content_img.width)
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    assert images.to_pil(t).tobytes() == content_img.tobytes()


@pytest.mark.parametrize("name, fmt", [("o.png", "PNG"), ("o.jpg", "JPEG"), ("o.JPEG", "JPEG"),
                                       ("o.webp", "WEBP")])
def test_save_by_extension(tmp_path, content_img, name, fmt):
    out = images.save_image(content_img, tmp_path / name)
    with Image.open(out) as img:
        assert img.format == fmt
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left behind


def test_output_path_checks(tmp_path):
    with pytest.raises(BadOutput, match="'.bmp' is not an image format nstyle writes"):
        images.check_output_path(tmp_path / "out.bmp")
    with pytest.raises(BadOutput, match="has no file extension"):
        images.check_output_path(tmp_path / "out")
    with pytest.raises(BadOutput, match="does not exist"):
        images.check_output_path(tmp_path / "missing" / "out.png")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(BadOutput, match="folder"):
        images.check_output_path(tmp_path / "d.png")


def test_failed_save_leaves_nothing(tmp_path, content_img, monkeypatch):
    def broken_save(self, fp, *a, **k):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        images.save_image(content_img, tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_progression_strip_and_gif(tmp_path, content_img):
    frames = [content_img, content_img.rotate(90), content_img.rotate(180)]
    strip = images.save_progression(frames, tmp_path / "p.png", frame_size=32)
    with Image.open(strip) as s:
        assert s.width == 3 * 32
    gif = images.save_progression(frames, tmp_path / "p.gif", frame_size=32)
    with Image.open(gif) as g:
        assert g.n_frames == 3


def _decoded_gif_frames(path) -> list[Image.Image]:
    """The frames as a video decoder (PyAV, FFmpeg's GIF decoder) shows them."""
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        return [f.to_image().convert("RGB") for f in container.decode(video=0)]


def test_progression_frames_of_changing_sizes_all_show_the_output_shape(tmp_path, content_img):
    """A run's frames change size: coarse-to-fine scales are smaller than the output, and
    scale mixing makes the style's shape first. Every decoded frame must have the output's
    shape and show its own picture, not a corner of it or garbage."""
    cat = content_img  # 64 x 43, landscape
    mix = content_img.rotate(90, expand=True).resize((30, 44))  # a portrait style image
    coarse = [cat.resize((48, 32)), cat.rotate(180).resize((48, 32))]
    fine = [cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT), cat]
    frames = [mix, *coarse, *fine]
    canvas = cat.size
    expected = [Image.new("RGB", canvas, "white") for _ in frames]
    expected[0].paste(mix.resize((29, 43)), ((64 - 29) // 2, 0))  # fitted inside, on white
    for e, f in zip(expected[1:], frames[1:]):
        e.paste(f.resize(canvas))

    def difference(a: Image.Image, b: Image.Image) -> float:
        return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())

    gif = images.save_progression(frames, tmp_path / "p.gif", frame_size=64)
    decoded = _decoded_gif_frames(gif)
    assert [d.size for d in decoded] == [canvas] * len(frames)
    for i, (d, e) in enumerate(zip(decoded, expected)):
        assert difference(d, e) < 6, f"GIF frame {i} differs from its picture"  # palette only
    strip = Image.open(images.save_progression(frames, tmp_path / "p.png", frame_size=64)).convert("RGB")
    assert strip.size == (64 * len(frames), 43)
    for i, e in enumerate(expected):
        assert difference(strip.crop((64 * i, 0, 64 * (i + 1), 43)), e) < 2, f"strip frame {i}"
