"""Where and in which precision torch runs: device choice and the CPU bf16 / CUDA AMP autocast."""

from __future__ import annotations

import torch

from ..errors import UsageError


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast: ~2x faster on CPUs with AVX512-BF16/AMX (measured 18 → 35 img/s on Lite0)."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    enabled = bool(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() in ("AVX512", "AVX512_BF16", "AMX"))
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)
