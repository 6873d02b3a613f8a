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
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(ZIP_MAGIC):  # whatever its name says
        return "torch"
    if path.suffix.lower() in (".pt", ".pth") or head[:1] == PICKLE_MAGIC:
        return "torch"
    return "onnx"  # protobuf has no magic number; ONNX Runtime names the problem if it is not ONNX
