"""Colour control (Gatys et al., CVPR 2017, "Controlling Perceptual Factors", section 5).

Pure functions on RGB tensors of shape (B, 3, H, W) with values in [0, 1]; nothing here
touches files or the network. Three ways to keep the content photo's colours:

- ``luminance``: stylize the luminance channel only. Content and style are reduced to their
  luminance (the style's first matched to the content's mean and standard deviation, so its
  brightness fits), the optimization runs on those gray images, and the result's luminance is
  recombined with the content's own chroma (YIQ's I and Q). This is the paper's method.
- ``histogram``: before optimizing, recolour each style image with a linear map so that its
  pixels' colour mean and covariance equal the content's (``match_color``: the symmetric
  "PCA" square root of the Image Analogies colour transfer, or the Cholesky factor), then
  stylize normally.
- ``swap``: stylize normally, then put the content's chroma under the finished luminance
  (``recombine``). What most tools do; kept for comparison.

YIQ is used because its Y is the usual luma (0.299 R + 0.587 G + 0.114 B) and the transform
is a fixed linear map, so it is exact to invert and cheap on any device.
"""

from __future__ import annotations

import torch

from nstyle.options.config import COLOR_MATCH, PRESERVE_COLORS  # noqa: F401 (re-exported)

# NTSC 1953 YIQ, rows = Y, I, Q of (R, G, B)
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.595716, -0.274453, -0.321263],
                            [0.211456, -0.522591, 0.311135]], dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _check_rgb(image: torch.Tensor, what: str = "image") -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{what}: expected an RGB tensor of shape (B, 3, H, W), got {shape}")


def _apply(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    m = matrix.to(device=image.device, dtype=image.dtype)
    return torch.einsum("ij,bjhw->bihw", m, image)


def rgb_to_yiq(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> YIQ (Y in [0, 1], I in ±0.6, Q in ±0.52)."""
    _check_rgb(rgb, "rgb_to_yiq")
    return _apply(_RGB_TO_YIQ, rgb)


def yiq_to_rgb(yiq: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_yiq`` (not clamped: out-of-gamut colours come back < 0 or > 1)."""
    _check_rgb(yiq, "yiq_to_rgb")
    return _apply(_YIQ_TO_RGB, yiq)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Luma Y of an RGB batch, shape (B, 1, H, W)."""
    return rgb_to_yiq(rgb)[:, :1]


def gray(rgb: torch.Tensor) -> torch.Tensor:
    """The luminance repeated in R, G and B: how VGG is shown a luminance-only image."""
    return luminance(rgb).clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def match_luminance(style: torch.Tensor, content: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Style as a gray RGB image whose luminance has the content's mean and std (paper eq. 7).

    Without this a dark painting would darken a bright photo, since luminance is all the
    optimization sees.
    """
    ys, yc = luminance(style), luminance(content)
    ys = (ys - ys.mean()) * (yc.std() / (ys.std() + eps)) + yc.mean()
    return ys.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def recombine(luma_from: torch.Tensor, chroma_from: torch.Tensor) -> torch.Tensor:
    """RGB image with the luminance of ``luma_from`` and the I, Q chroma of ``chroma_from``.

    Both (B, 3, H, W) RGB of the same size; the result is clamped to [0, 1].
    """
    _check_rgb(luma_from, "luma_from")
    _check_rgb(chroma_from, "chroma_from")
    if luma_from.shape[-2:] != chroma_from.shape[-2:]:
        raise ValueError(f"recombine: sizes differ, {tuple(luma_from.shape[-2:])} and "
                         f"{tuple(chroma_from.shape[-2:])}")
    yiq = torch.cat([luminance(luma_from), rgb_to_yiq(chroma_from)[:, 1:]], dim=1)
    return yiq_to_rgb(yiq).clamp(0, 1)


def _sqrtm(cov: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Symmetric (inverse) square root of a covariance matrix via its eigendecomposition."""
    values, vectors = torch.linalg.eigh(cov)
    values = values.clamp_min(1e-10)
    power = -0.5 if inverse else 0.5
    return vectors @ torch.diag(values ** power) @ vectors.T


def _mean_cov(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = image.permute(1, 0, 2, 3).reshape(3, -1).double()
    mean = pixels.mean(dim=1, keepdim=True)
    centred = pixels - mean
    # a tiny ridge keeps flat (e.g. gray) images invertible
    cov = centred @ centred.T / max(pixels.shape[1] - 1, 1) + 1e-5 * torch.eye(3, dtype=torch.float64)
    return mean, cov


def match_color(style: torch.Tensor, content: torch.Tensor, method: str = "pca") -> torch.Tensor:
    """Recolour ``style`` so its RGB mean and covariance equal ``content``'s (paper eq. 1-6).

    x' = A (x − μ_s) + μ_c with A Σ_s Aᵀ = Σ_c. ``pca``: A = Σ_c^½ Σ_s^-½ (the symmetric
    square roots, as in Image Analogies; it rotates colours least); ``cholesky``:
    A = L_c L_s⁻¹ with Σ = L Lᵀ. Result clamped to [0, 1] (clamping moves the statistics
    only where the map leaves the gamut).
    """
    _check_rgb(style, "style")
    _check_rgb(content, "content")
    if method not in COLOR_MATCH:
        raise ValueError(f"method must be one of {', '.join(COLOR_MATCH)}, got {method!r}")
    mu_s, cov_s = _mean_cov(style)
    mu_c, cov_c = _mean_cov(content)
    if method == "pca":
        a = _sqrtm(cov_c) @ _sqrtm(cov_s, inverse=True)
    else:
        a = torch.linalg.cholesky(cov_c) @ torch.linalg.inv(torch.linalg.cholesky(cov_s))
    b, _, h, w = style.shape
    pixels = style.permute(1, 0, 2, 3).reshape(3, -1).double()
    out = a @ (pixels - mu_s) + mu_c
    out = out.reshape(3, b, h, w).permute(1, 0, 2, 3)
    return out.to(style.dtype).clamp(0, 1).contiguous()


def prepare_inputs(mode: str, content: torch.Tensor, styles: list[torch.Tensor],
                   method: str = "pca") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The (content, styles) the optimization should see for ``mode`` (see the module doc)."""
    if mode == "luminance":
        return gray(content), [match_luminance(s, content) for s in styles]
    if mode == "histogram":
        return content, [match_color(s, content, method) for s in styles]
    return content, list(styles)


def finish(mode: str, output: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The final RGB image for ``mode``: luminance and swap take the content's chroma.

    ``content`` is resized to ``output``'s size by the caller.
    """
    if mode in ("luminance", "swap"):
        return recombine(output, content)
    return output


def zca_match(values: torch.Tensor, reference: torch.Tensor, ridge: float = 1e-4) -> torch.Tensor:
    """``values`` (N, D) mapped so their mean and covariance are ``reference``'s (M, D): the
    ZCA whitening of ``values`` followed by the colouring with ``reference``'s covariance,
    x' = Σ_r^½ Σ_v^-½ (x − μ_v) + μ_r (the symmetric square roots, as ``match_color``'s pca).
    ``ridge`` is added to both covariances' diagonals (NNST's 1e-4, which keeps a flat
    channel from being blown up). Float64 inside; returned in ``values``' dtype."""
    v, r = values.double(), reference.double()
    mu_v, mu_r = v.mean(0, keepdim=True), r.mean(0, keepdim=True)
    eye = torch.eye(v.shape[1], dtype=torch.float64, device=v.device)
    cov_v = (v - mu_v).T @ (v - mu_v) / v.shape[0] + ridge * eye
    cov_r = (r - mu_r).T @ (r - mu_r) / r.shape[0] + ridge * eye
    a = _sqrtm(cov_r) @ _sqrtm(cov_v, inverse=True)
    return ((v - mu_v) @ a.T + mu_r).to(values.dtype)
