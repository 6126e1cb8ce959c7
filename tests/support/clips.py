"""Clips made for tests: smooth textures, a window panning over a picture (a known shift
per frame), and H.264 files written with PyAV."""

import numpy as np


def texture(width=96, height=64, seed=0) -> np.ndarray:
    """Smooth random texture (blurred noise), uint8 RGB: flow has something to hold on to."""
    import cv2  # an optional extra (video): imported only by the tests that need it

    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), 2)
    return ((t - t.min()) / (t.max() - t.min()) * 255).astype(np.uint8)


def panned(picture: np.ndarray, frames: int, shift: int, width: int = 64) -> list[np.ndarray]:
    """A window of ``width`` px sliding left over ``picture``: the content moves right by
    ``shift`` px a frame, and a strip of ``shift`` px appears on the left."""
    x0 = picture.shape[1] - width - 1
    return [np.ascontiguousarray(picture[:, x0 - i * shift: x0 - i * shift + width]) for i in range(frames)]


def write_video(path, frames, fps=12, audio=False):
    """``frames`` (uint8 arrays) as H.264, with a second of sine sound when ``audio``."""
    import av  # an optional extra (video)

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        sound = out.add_stream("aac", rate=16000) if audio else None
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            for p in stream.encode(vf):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
        if sound is not None:
            t = np.arange(16000, dtype=np.float32) / 16000
            af = av.AudioFrame.from_ndarray((0.2 * np.sin(2 * np.pi * 440 * t))[None], format="fltp", layout="mono")
            af.sample_rate = 16000
            for p in list(sound.encode(af)) + list(sound.encode(None)):
                out.mux(p)
    return path

