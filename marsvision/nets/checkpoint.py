"""Torch model files (like timm's pretrained_cfg / nanoGPT's checkpoint dict): write, read, rebuild.

A model file is a ``torch.save`` of plain data only — loadable with ``weights_only=True``: the
description from ``model_file.model_meta`` (``format``, ``arch``, ``class_names``, ``input_size``,
``mean``, ``std``, ``drop_rate``, ``config``, ``metrics``) plus ``state_dict``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..atomic import atomic_save
from ..model_file import TORCH_FORMAT, ModelFileError
from .models import create_model


def save_model(path: str | os.PathLike, model: torch.nn.Module, meta: dict, half: bool = False) -> None:
    """Write ``meta`` + weights atomically; ``half`` stores float tensors as fp16 (half the size)."""
    sd = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }
    atomic_save(lambda tmp: torch.save({**meta, "state_dict": sd}, tmp), path)


def read_model_file(path: str | os.PathLike) -> dict:
    """Load and validate a model file's dict (weights stay tensors)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign/corrupt files
        raise ModelFileError(
            f"{path}: not a readable marsvision model file ({type(e).__name__}: {str(e)[:120]})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != TORCH_FORMAT or "state_dict" not in ckpt:
        raise ModelFileError(f"{path}: not a marsvision model file (format {TORCH_FORMAT} expected)")
    return ckpt


def build_model(ckpt: dict) -> torch.nn.Module:
    """Rebuild the architecture from the file's description and load its weights (fp32, eval mode)."""
    model = create_model(ckpt["arch"], len(ckpt["class_names"]), pretrained=False, drop_rate=ckpt.get("drop_rate", 0.0))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()})
    return model.eval()
