"""Where and in what precision a run computes: the device option resolved, bfloat16 where
the hardware has it, and out-of-memory errors recognised."""

from __future__ import annotations

import torch

from nstyle.errors import BadOption


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise BadOption("device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu")
    if name == "mps" and not mps:
        raise BadOption("device mps was asked for, but it is not available here; use --device cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """True where oneDNN has native bfloat16 matrix units (AMX or AVX512-BF16) to use."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The loop's dtype for ``precision`` 'auto', 'fp32' or 'bf16' on ``device``."""
    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or \
        "out of memory" in text or "not enough memory" in text or "can't allocate memory" in text
