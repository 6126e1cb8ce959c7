"""Loss terms of Gatys et al.: small pure functions on feature maps.

Shapes: features are (B, N, H, W) with N channels and M = H*W positions. Every loss
returns a 0-dim tensor (summed over the batch).
"""

from __future__ import annotations

import threading
from typing import Optional

import torch

#: the ``--style-loss`` choices: what a style term compares (``nstyle.core.objective``)
STYLE_LOSSES = ("gram", "meancov", "neighbors")


def _accumulation_dtype(t: torch.Tensor) -> torch.Tensor:
    """Half-precision features are upcast so sums and Grams accumulate in float32."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _positions_by_channels(features: torch.Tensor) -> torch.Tensor:
    """(B, N, H, W) -> a (B, M, N) view: no copy for channels_last or contiguous features."""
    b, n, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        return features.permute(0, 2, 3, 1).reshape(b, h * w, n)  # (B, H, W, N) in memory
    return features.reshape(b, n, h * w).transpose(1, 2)


def _raw_gram(flat: torch.Tensor) -> torch.Tensor:
    """FᵀF/M as float32 from a (B, M, N) view.

    bfloat16 features are multiplied as they are: the matrix units accumulate in float32
    and only the N×N result is rounded, then upcast. Upcasting the features first instead
    (an extra full-size copy and a float32 product) was slower and no better in loss
    (bench/benchmark.py, docs/benchmark.md).
    """
    return _accumulation_dtype(torch.bmm(flat.transpose(1, 2), flat)) / flat.shape[1]


def gram(features: torch.Tensor) -> torch.Tensor:
    """Position-normalized Gram matrix G/M, shape (B, N, N), at least float32.

    The paper's Gram is F Fᵀ; we divide by M so that a style image of any size gives
    comparable targets (``style_loss`` undoes this, so its value is the paper's E_l
    whenever style and output have the same size).
    """
    return _raw_gram(_positions_by_channels(features))


def gram_distance(diff: torch.Tensor, channels: int, scale=1.0) -> torch.Tensor:
    """``scale`` · Σ (G/M − A/M)² / (4 N²) from ``diff`` = G/M − A/M: the paper's E_l (eq. 4)
    once the Grams are position-normalized. The one statement of the style formula: the
    whole-image losses below and the tiled objective (Grams summed over tiles) both use it."""
    return scale * diff.pow(2).sum() / (4.0 * channels * channels)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_content = 1/2 · Σ (F − P)²  (Gatys et al. 2016, eq. 1)."""
    return 0.5 * (_accumulation_dtype(features) - _accumulation_dtype(target)).pow(2).sum()


class _StyleLoss(torch.autograd.Function):
    """E_l with a hand-written backward: dE/dF = F (G/M − A/M) / (N² M).

    Autograd's own backward of FᵀF takes two matmuls plus a sum of two full-size
    gradients (and the elementwise chain of (G − A)²); this is one matmul, in the
    features' dtype, with the float32 difference folded into the small N×N factor.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
        flat = _positions_by_channels(features)
        n = flat.shape[2]
        diff = _raw_gram(flat) - target_gram
        ctx.save_for_backward(features, diff)
        return gram_distance(diff, n)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        features, diff = ctx.saved_tensors
        b, n, h, w = features.shape
        flat = _positions_by_channels(features)
        factor = (diff * (grad_out / (n * n * h * w))).to(flat.dtype)
        grad_flat = torch.bmm(flat, factor)  # (B, M, N), laid out like ``flat``'s source
        if flat.stride(2) == 1:  # channels_last source: (B, H, W, N) in memory
            grad = grad_flat.reshape(b, h, w, n).permute(0, 3, 1, 2)
        else:
            grad = grad_flat.transpose(1, 2).reshape(b, n, h, w)
        return grad, None


def style_loss(features: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """E_l = 1/(4 N² M²) · Σ (G − A)²  (eq. 4), with ``target_gram`` = A/M as from ``gram``.

    Since G/M − A/M = (G − A)/M, this equals 1/(4 N²) · Σ (G/M − A/M)².
    """
    return _StyleLoss.apply(features, target_gram)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Squared total variation Σ (x[i, j+1] − x[i, j])² + (x[i+1, j] − x[i, j])²."""
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return _accumulation_dtype(dx).pow(2).sum() + _accumulation_dtype(dy).pow(2).sum()


def guided_gram(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Guided Gram matrix (Gatys et al. 2017, section 4): the Gram of the features weighted
    by a guidance channel, divided by the guidance's mass Σ m², shape (B, N, N).

    ``mask`` is (B or 1, 1, H, W) in [0, 1] at the features' resolution. With a binary mask
    this is the mean of f fᵀ over the region's positions, so it compares directly with
    ``gram`` of a whole style image. An empty mask gives zeros.
    """
    b, n, h, w = features.shape
    weighted = _accumulation_dtype(features) * mask.to(features.device, torch.float32)
    flat = weighted.reshape(b, n, h * w)
    mass = mask.float().pow(2).sum().clamp_min(1e-8)
    return torch.bmm(flat, flat.transpose(1, 2)) / mass


def guided_style_loss(features: torch.Tensor, mask: torch.Tensor,
                      target_gram: torch.Tensor) -> torch.Tensor:
    """Style loss of one region: E_l on the guided Gram, times the region's share of the
    positions (Σ m² / M), so that each pixel feels the same style pressure whatever the size
    of its region; a mask of ones gives exactly ``style_loss``.
    """
    n, h, w = features.shape[1], features.shape[2], features.shape[3]
    share = mask.float().pow(2).sum() / (h * w)
    if float(share) <= 0:
        return features.new_zeros((), dtype=torch.float32)
    return gram_distance(guided_gram(features, mask) - target_gram, n, share)


# ---- mean and covariance (the 2-Wasserstein distance between Gaussians) -----------------


_EIGH_THREADS_LOCK = threading.Lock()


def _eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh`` on one CPU thread: LAPACK's threaded eigensolver on these
    N <= 512 matrices is slower than one thread, and on a loaded two-core machine 50x
    slower (7 s against 0.15 s for N = 512, measured), as its threads wait on each other."""
    if matrix.device.type != "cpu":
        return torch.linalg.eigh(matrix)
    # The thread count is process-wide: without the lock two service jobs could each save
    # the other's 1 and leave the whole process on one thread for good.
    with _EIGH_THREADS_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return torch.linalg.eigh(matrix)
        finally:
            torch.set_num_threads(threads)


class FeatureMoments:
    """A layer's feature mean μ (B, N) and second raw moment E[f fᵀ] (B, N, N), float32.

    These two combine linearly (a blend of styles is the blend of their moments; the
    covariance is not linear in the weights), so the style targets keep them, and the
    covariance Σ = E[f fᵀ] − μμᵀ and its square root are derived once from the final,
    blended target (``covariance``, ``cov_sqrt``: eigendecomposition in float64, cached)."""

    def __init__(self, mean: torch.Tensor, second: torch.Tensor) -> None:
        self.mean, self.second = mean, second
        self._derived: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None

    def __mul__(self, w: float) -> "FeatureMoments":
        return FeatureMoments(self.mean * w, self.second * w)

    __rmul__ = __mul__

    def __add__(self, other: "FeatureMoments") -> "FeatureMoments":
        return FeatureMoments(self.mean + other.mean, self.second + other.second)

    def to(self, device) -> "FeatureMoments":
        return FeatureMoments(self.mean.to(device), self.second.to(device))

    def detach(self) -> "FeatureMoments":
        return FeatureMoments(self.mean.detach(), self.second.detach())

    def cpu(self) -> "FeatureMoments":
        return self.to("cpu")

    def _derive(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._derived is None:
            mean, second = self.mean.double(), self.second.double()
            cov = second - mean[:, :, None] * mean[:, None, :]
            cov = 0.5 * (cov + cov.transpose(1, 2))
            values, vectors = _eigh(cov)
            root = vectors @ torch.diag_embed(values.clamp_min(0).sqrt()) @ vectors.transpose(1, 2)
            self._derived = (cov, root, torch.diagonal(cov, dim1=1, dim2=2).sum(-1))
        return self._derived

    @property
    def covariance(self) -> torch.Tensor:
        """Σ, (B, N, N) float64."""
        return self._derive()[0]

    @property
    def cov_sqrt(self) -> torch.Tensor:
        """Σ^½, the symmetric square root, (B, N, N) float64."""
        return self._derive()[1]


def moments(features: torch.Tensor, mask: Optional[torch.Tensor] = None) -> FeatureMoments:
    """Mean and second raw moment of ``features`` (B, N, H, W) over its positions; with a
    ``mask`` (B or 1, 1, H, W) each position counts with weight m² (so the second moment is
    ``guided_gram``), the weights as the guided Gram matrices use them."""
    if mask is None:
        flat = _positions_by_channels(features)
        return FeatureMoments(_accumulation_dtype(flat).sum(1) / flat.shape[1], _raw_gram(flat))
    weight = mask.to(features.device, torch.float32).pow(2)
    mass = weight.sum().clamp_min(1e-8)
    mean = (_accumulation_dtype(features) * weight).sum((2, 3)) / mass
    return FeatureMoments(mean, guided_gram(features, mask))


class _TraceSqrt(torch.autograd.Function):
    """tr(M^½) of a symmetric positive semi-definite M (B, N, N), in float64.

    Forward: the eigenvalues λ of M, Σ √λ. Backward: d tr(M^½)/dM = ½ M^-½, written with
    the same eigenvectors, each λ floored at ``floor`` first: at λ → 0 the true derivative
    is infinite (a direction the output has no variance in yet), the floor keeps the step
    finite. Autograd's own eigh backward divides by λᵢ − λⱼ and fails on the repeated
    eigenvalues a rank-deficient covariance has; this form does not."""

    @staticmethod
    def forward(ctx, m: torch.Tensor, floor: float) -> torch.Tensor:
        m = 0.5 * (m + m.transpose(-2, -1))
        values, vectors = _eigh(m)
        ctx.save_for_backward(values, vectors)
        ctx.floor = floor
        return values.clamp_min(0).sqrt().sum()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        values, vectors = ctx.saved_tensors
        inv_root = values.clamp_min(ctx.floor).rsqrt()
        grad = 0.5 * (vectors * inv_root.unsqueeze(-2)) @ vectors.transpose(-2, -1)
        return grad * grad_out, None


def meancov_distance(stats: FeatureMoments, target: FeatureMoments) -> torch.Tensor:
    """The squared 2-Wasserstein distance between the Gaussians of ``stats`` (the output's,
    differentiable) and ``target`` (the style's), divided by the channels N:

        (‖μ − μ_s‖² + tr Σ + tr Σ_s − 2 tr (Σ_s^½ Σ Σ_s^½)^½) / N

    The matrix products and the trace of the square root run in float64: Σ's eigenvalues
    span many orders of magnitude on VGG's 0..255 scale. Zero when the output's mean and
    covariance equal the style's."""
    n = stats.mean.shape[-1]
    mean = stats.mean.double()
    cov = stats.second.double() - mean[:, :, None] * mean[:, None, :]
    root = target.cov_sqrt
    target_trace = target._derive()[2]
    # eigenvalues below this (relative to the style's average variance squared) count as
    # no variance: it bounds the gradient of the square root's trace (``_TraceSqrt``)
    floor = float(1e-6 * (target_trace.mean() / n) ** 2) + 1e-30
    cross = _TraceSqrt.apply(root @ cov @ root, floor)
    mean_term = (mean - target.mean.double()).pow(2).sum()
    cov_term = torch.diagonal(cov, dim1=1, dim2=2).sum() + target_trace.sum() - 2 * cross
    # float32 for the objective, float64 kept for float64 input (gradient checks)
    return ((mean_term + cov_term) / n).to(torch.promote_types(stats.mean.dtype, torch.float32))


def meancov_loss(features: torch.Tensor, target: FeatureMoments,
                 mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``meancov_distance`` of ``features`` (B, N, H, W) to the style's moments; with a
    ``mask``, of the region's weighted moments, times the region's share of the positions
    (as ``guided_style_loss``: each pixel feels the same style pressure whatever the size
    of its region; a mask of ones gives the unmasked loss)."""
    if mask is None:
        return meancov_distance(moments(features), target)
    h, w = features.shape[-2:]
    share = mask.float().pow(2).sum() / (h * w)
    if float(share) <= 0:
        return features.new_zeros((), dtype=torch.float32)
    return share * meancov_distance(moments(features, mask), target)


def temporal_loss(image: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ c · (x − ω)² over pixels and channels (Ruder et al. 2016, eq. 2, as a sum like the
    content and tv terms rather than a mean): ``target`` ω is the previous stylized video
    frame warped to this one, ``mask`` c (B or 1, 1, H, W) in [0, 1] where that warp is
    trusted."""
    diff = _accumulation_dtype(image) - _accumulation_dtype(target)
    return (mask.to(diff.dtype) * diff.pow(2)).sum()
