"""``--style-loss meancov``: each layer's feature mean and covariance, compared as the
squared 2-Wasserstein distance between Gaussians (the statistics of Li et al. 2017 and
Kalischek et al. 2021, as a loss of the optimization).

Shapes: features are (B, N, H, W) with N channels and M = H*W positions.
"""

from __future__ import annotations

import threading
from typing import Mapping, Optional, Sequence

import torch

from nstyle.core.losses.base import StyleLoss
from nstyle.core.losses.gram import guided_gram
from nstyle.core.losses.terms import accumulation_dtype, positions_by_channels, raw_gram
from nstyle.core.tiles import Tile, masked_core, window
from nstyle.options.layers import layer_stride


_EIGH_THREADS_LOCK = threading.Lock()


def eigh_one_thread(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
            values, vectors = eigh_one_thread(cov)
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
        flat = positions_by_channels(features)
        return FeatureMoments(accumulation_dtype(flat).sum(1) / flat.shape[1], raw_gram(flat))
    weight = mask.to(features.device, torch.float32).pow(2)
    mass = weight.sum().clamp_min(1e-8)
    mean = (accumulation_dtype(features) * weight).sum((2, 3)) / mass
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
        values, vectors = eigh_one_thread(m)
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


@torch.no_grad()
def moment_sums(vgg, image: torch.Tensor, layers: Sequence[str], tiles: Sequence[Tile],
                masks: Sequence[Optional[Mapping[str, torch.Tensor]]] = (None,)
                ) -> list[dict[str, FeatureMoments]]:
    """As ``gram_sums``, the weighted mean and second moment (``moments``) of every
    mask and layer over the whole image, from its tiles: both are sums over positions."""
    h, w = image.shape[-2:]
    sums: list[dict[str, list[torch.Tensor]]] = [{} for _ in masks]
    for tile in tiles:
        feats = vgg(window(image, tile), layers)
        for layer in layers:
            ly, lx, gy, gx = tile.core(layer, h, w)
            for i, m in enumerate(masks):
                weight = None if m is None else m[layer][..., gy, gx].reshape(1, 1, -1).float()
                flat = masked_core(feats[layer], None if m is None else m[layer], ly, lx, gy, gx)
                mean = (flat if weight is None else flat * weight).sum(2)
                parts = [mean, torch.bmm(flat, flat.transpose(1, 2))]
                sums[i][layer] = parts if layer not in sums[i] else \
                    [a + b for a, b in zip(sums[i][layer], parts)]
    out = []
    for i, m in enumerate(masks):
        stats = {}
        for layer, (mean, second) in sums[i].items():
            s = layer_stride(layer)
            mass = max((h // s) * (w // s) if m is None else float(m[layer].float().pow(2).sum()), 1e-8)
            stats[layer] = FeatureMoments(mean / mass, second / mass)
        out.append(stats)
    return out


class MeanCovLoss(StyleLoss):
    """Each layer's mean and covariance against the style's (``meancov_loss``). Tiles
    exactly: the mean and the second moment are sums over positions (``moment_sums``)."""

    name = "meancov"
    scale = 400.0

    def targets(self, features, layer_weights, image_hw):
        return {layer: moments(f) for layer, f in features.items()}

    def tiled_targets(self, vgg, image, layers, tiles):
        return moment_sums(vgg, image, list(layers), tiles)[0]

    def region_loss(self, region, layer, features):
        target = region.targets[layer]
        mask = None if region.mask is None else region.layer_masks[layer]
        return region.weight * meancov_loss(features, target, mask)

    def tiled_style_pass(self, vgg, image, tiles, objective, masks):
        """Every region's global mean μ and second moment S, hence the terms, and per
        region and layer the derivatives (dL/dS, dL/dμ) at them, divided by the region's
        mass: the surrogate ⟨dL/dS, Σ_core (m f)(m f)ᵀ⟩ + ⟨dL/dμ, Σ_core m² f⟩ then has the
        loss's exact gradient at every core position (the loss is a function of μ and S
        alone, and both are sums over positions)."""
        h, w = image.shape[-2:]
        terms: dict[str, torch.Tensor] = {}
        diffs: list[dict[str, tuple]] = [{} for _ in objective.regions]
        stats = moment_sums(vgg, image, [s.layer for s in objective.style], tiles, masks)
        for term in objective.style:
            s = layer_stride(term.layer)
            positions = (h // s) * (w // s)
            value = image.new_zeros((), dtype=torch.float32)
            for i, region in enumerate(objective.regions):
                mass = positions if region.mask is None else \
                    float(region.layer_masks[term.layer].float().pow(2).sum())
                if mass <= 0:
                    continue
                mean = stats[i][term.layer].mean.detach().requires_grad_(True)
                second = stats[i][term.layer].second.detach().requires_grad_(True)
                with torch.enable_grad():
                    distance = meancov_distance(FeatureMoments(mean, second),
                                                       region.targets[term.layer])
                    distance.backward()
                scale = region.weight * mass / positions  # the region's weight and share
                value = value + scale * distance.detach()
                factor = term.weight * scale / max(mass, 1e-8)
                diffs[i][term.layer] = (second.grad * factor, mean.grad * factor)
            terms[term.name] = term.weight * value
        return terms, diffs

    def tile_surrogate(self, surrogate, factor, flat, mask_core):
        weight = 1.0 if mask_core is None else mask_core.reshape(1, 1, -1).float()
        return surrogate + (torch.bmm(factor[0], flat) * flat).sum() + \
            (factor[1].unsqueeze(2) * flat * weight).sum()


MEANCOV = MeanCovLoss()
