"""Model file kinds (torch checkpoint or ONNX) and the one error type for unusable model files.

Torch-free on purpose: the ONNX runtime path and the CLI import this without importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path

ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
PICKLE_MAGIC = b"\x80"  # legacy torch.save (pickle protocol 2+)


class ModelFileError(ValueError):
    """A model file that is missing, corrupt or not a marsvision model."""


def model_kind(path: str | os.PathLike) -> str:
    """``"onnx"`` or ``"torch"``, by suffix, then by the first bytes; ``ModelFileError`` if missing."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".pth"):
        return "torch"
    with open(path, "rb") as f:
        head = f.read(4)
    return "torch" if head.startswith(ZIP_MAGIC) or head[:1] == PICKLE_MAGIC else "onnx"
