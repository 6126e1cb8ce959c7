"""Optical flow between video frames, warping, and where the warp can be trusted.

Pure NumPy/OpenCV functions on RGB frames (H, W, 3) uint8 or float arrays; nothing here
touches files or the network. Conventions, as OpenCV's: a flow field ``flow`` (H, W, 2),
float32, computed from ``source`` to ``target`` says that ``source[y, x]`` is seen at
``target[y + flow[y, x, 1], x + flow[y, x, 0]]``.

What video stylization needs of two consecutive frames (``frame_flow``), after Ruder,
Dosovitskiy & Brox, "Artistic style transfer for videos" (2016), section 3.2:

- the backward flow (current -> previous), which pulls the previous stylized frame into
  the current one (``warp``);
- a mask of the pixels where that warp can be trusted: the forward flow (previous ->
  current), carried back along the backward flow, must cancel it (else the pixel was
  occluded in the previous frame or has just been uncovered), the backward flow must not
  change sharply there (a motion boundary), and its source must lie inside the frame.

``temporal_error`` is the figure the issue asks for: the mean absolute difference between
an output frame and the previous output warped to it, on the trusted pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nstyle.errors import BadOption

FLOW_METHODS = ("dis", "farneback")

#: forward-backward consistency (Ruder et al., eq. 3's test; Sundaram et al. 2010):
#: |f̃ + b|² > CONSISTENCY_SCALE (|f̃|² + |b|²) + CONSISTENCY_OFFSET marks a pixel occluded
CONSISTENCY_SCALE, CONSISTENCY_OFFSET = 0.01, 0.5
#: motion boundaries: |∇b_x|² + |∇b_y|² > BOUNDARY_SCALE |b|² + BOUNDARY_OFFSET
BOUNDARY_SCALE, BOUNDARY_OFFSET = 0.01, 0.002


def import_cv2():
    """OpenCV, or a one-line message saying how to get it (it is the video extra)."""
    try:
        import cv2
    except ImportError:
        raise BadOption("video needs OpenCV and PyAV: pip install 'nstyle[video]'") from None
    return cv2


def _gray(frame: np.ndarray) -> np.ndarray:
    """uint8 luminance, what both flow methods take."""
    cv2 = import_cv2()
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY) if a.ndim == 3 else a


def optical_flow(source: np.ndarray, target: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense flow from ``source`` to ``target`` (same size), (H, W, 2) float32 in pixels.

    ``dis``: OpenCV's Dense Inverse Search (Kroeger et al. 2016), preset 'medium': fast
    and good on the large motions of a pan; ``farneback``: the polynomial-expansion method,
    smoother and slower."""
    if method not in FLOW_METHODS:
        raise BadOption(f"flow must be one of {', '.join(FLOW_METHODS)}, got {method!r}")
    cv2 = import_cv2()
    a, b = _gray(source), _gray(target)
    if a.shape != b.shape:
        raise BadOption(f"frames of different sizes: {a.shape[::-1]} and {b.shape[::-1]}")
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = dis.calc(a, b, None)
    else:
        flow = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=4, winsize=15,
                                            iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    return np.asarray(flow, dtype=np.float32)


def _sample_points(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) each pixel's flow points at, as float32 maps for ``cv2.remap``."""
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs + flow[..., 0], ys + flow[..., 1]


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at p + flow(p) for every pixel p (bilinear; the border repeated
    where the flow leaves the frame: ``consistency_mask`` marks those pixels)."""
    cv2 = import_cv2()
    map_x, map_y = _sample_points(flow)
    return cv2.remap(np.ascontiguousarray(image), map_x, map_y, interpolation=cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def consistency_mask(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """Float32 (H, W) mask, 1 where the backward flow (current -> previous) can be trusted,
    0 at occlusions, motion boundaries and pixels whose source lies outside the frame.

    ``forward`` is the flow previous -> current: at a pixel seen in both frames, going back
    along ``backward`` and then forward again must return to the pixel."""
    cv2 = import_cv2()
    h, w = backward.shape[:2]
    forward_back = warp(forward, backward)  # f̃(p) = f(p + b(p))
    total = forward_back + backward
    occluded = (total ** 2).sum(-1) > CONSISTENCY_SCALE * ((forward_back ** 2).sum(-1)
                                                          + (backward ** 2).sum(-1)) + CONSISTENCY_OFFSET
    # central differences (OpenCV's ksize=1 kernel is [-1, 0, 1]: twice the derivative)
    gx = cv2.Sobel(backward, cv2.CV_32F, 1, 0, ksize=1) * 0.5
    gy = cv2.Sobel(backward, cv2.CV_32F, 0, 1, ksize=1) * 0.5
    gradient = (gx ** 2).sum(-1) + (gy ** 2).sum(-1)
    boundary = gradient > BOUNDARY_SCALE * (backward ** 2).sum(-1) + BOUNDARY_OFFSET
    map_x, map_y = _sample_points(backward)
    outside = (map_x < 0) | (map_x > w - 1) | (map_y < 0) | (map_y > h - 1)
    return (~(occluded | boundary | outside)).astype(np.float32)


@dataclass(frozen=True)
class FrameFlow:
    """How the previous frame maps onto the current one."""

    backward: np.ndarray  # (H, W, 2) flow current -> previous: warp(previous, backward)
    mask: np.ndarray  # (H, W) float32, 1 where that warp is trusted

    @property
    def trusted(self) -> float:
        """The share of the frame where the warp is trusted (0..1)."""
        return float(self.mask.mean())


def frame_flow(previous: np.ndarray, current: np.ndarray, method: str = "dis") -> FrameFlow:
    """Backward flow and its consistency mask between two consecutive frames (H, W, 3)."""
    backward = optical_flow(current, previous, method)
    forward = optical_flow(previous, current, method)
    return FrameFlow(backward, consistency_mask(backward, forward))


def temporal_error(previous_output: np.ndarray, current_output: np.ndarray, flow: FrameFlow) -> float:
    """Mean |current − previous warped to it| over the trusted pixels and channels, for
    (H, W, 3) frames in 0..255 (uint8 RGB), so in 0..255 levels (NaN when no pixel is
    trusted): how much an output flickers where the picture itself did not change."""
    prev = np.asarray(previous_output, dtype=np.float32)
    cur = np.asarray(current_output, dtype=np.float32)
    diff = np.abs(cur - warp(prev, flow.backward)).mean(axis=-1)
    weight = flow.mask.sum()
    return float((diff * flow.mask).sum() / weight) if weight > 0 else float("nan")


def soften_mask(mask: np.ndarray, margin: int) -> np.ndarray:
    """``mask`` with its trusted region pulled back by ``margin`` px from every untrusted
    pixel and its edge blurred over about as much: the pixels next to what a frame
    uncovers are repainted with it, so its seam is not frozen into the next frames."""
    if margin <= 0:
        return mask
    cv2 = import_cv2()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    eroded = cv2.erode(mask.astype(np.float32), kernel, borderType=cv2.BORDER_REPLICATE)
    return np.clip(cv2.GaussianBlur(eroded, (0, 0), margin / 2), 0.0, 1.0).astype(np.float32) * mask


def new_ground(mask: np.ndarray, grow: int) -> np.ndarray:
    """Float32 (H, W), 1 where ``mask`` does not trust the warp (what a frame uncovers or
    what moved unpredictably), grown by ``grow`` px (a square) so that the deeper layers,
    whose positions cover 8-16 px, see it as a region with some context; 0 elsewhere."""
    untrusted = (mask < 0.5).astype(np.uint8)
    if grow > 0:
        untrusted = import_cv2().dilate(untrusted, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return untrusted.astype(np.float32)
