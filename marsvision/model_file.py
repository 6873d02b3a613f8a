"""Model files, in one place: the two kinds (torch checkpoint, ONNX), the plain-data description each
carries, and the one error type for unusable model files.

A model file describes itself: architecture, class names, input size, mean/std, training config and
metrics, as JSON-able data. A torch checkpoint stores it as the keys of its dict (``model_meta``); an
ONNX file stores the same dict as strings in its ``metadata_props`` (``metadata_props`` /
``parse_metadata``). Inference builds its preprocessing from it.

Torch-free on purpose: the ONNX runtime and the CLI import this without importing torch.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from .errors import MarsvisionError

TORCH_FORMAT = "marsvision-model/1"
# /2: the graph outputs pooled features and feature maps; the linear head is metadata ("head").
# /1 (older exports): the graph outputs logits; still read, without novelty or explanations.
ONNX_FORMAT = "marsvision-onnx/2"
ONNX_FORMATS = ("marsvision-onnx/1", ONNX_FORMAT)
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
PICKLE_MAGIC = b"\x80"  # legacy torch.save (pickle protocol 2+)
PREPROCESSING = (
    "RGB; whole frame resized to input_size x input_size (PIL bilinear, JPEG draft >= 2x); "
    "x / 255; (x - mean) / std per channel; NCHW float32"
)


BUNDLED_MODEL = "marsvision-lite0.int8.onnx"
BUNDLED_SOURCE = "marsvision-lite0.pt"  # the torch checkpoint the bundled ONNX file is exported from
EXPORT_COMMAND = f"marsvision export --model marsvision/assets/{BUNDLED_SOURCE} --int8 --output marsvision/assets"


def bundled_model_path() -> Path:
    """The model file shipped inside the package (int8 ONNX)."""
    return Path(str(resources.files("marsvision") / "assets" / BUNDLED_MODEL))


def bundled_source_path() -> Path:
    """The torch checkpoint the bundled ONNX model is exported from (``EXPORT_COMMAND``); it is in the
    repository, not in the wheel."""
    return bundled_model_path().with_name(BUNDLED_SOURCE)


class ModelFileError(MarsvisionError, ValueError):
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


def model_meta(
    arch: str,
    class_names: list[str],
    input_size: int,
    mean,
    std,
    drop_rate: float = 0.0,
    config: dict | None = None,
    metrics: dict | None = None,
) -> dict:
    """The JSON-able description stored beside the weights of a torch model file."""
    return {
        "format": TORCH_FORMAT,
        "arch": arch,
        "class_names": list(class_names),
        "input_size": int(input_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "drop_rate": float(drop_rate),
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
    }


def metadata_props(meta: dict, precision: str) -> dict[str, str]:
    """The ONNX ``metadata_props`` an exported file carries, from a torch checkpoint's ``meta``.

    With ``meta["head"]`` (the classifier taken out of the graph, ``export.head.split_head``) the file
    is format /2; ``meta["trust"]`` (calibration and novelty data) is written when present.
    """
    core = ("format", "arch", "class_names", "input_size", "mean", "std", "head", "trust")
    blobs = {k: json.dumps(meta[k]) for k in ("head", "trust") if meta.get(k)}
    return {
        "marsvision_format": ONNX_FORMAT if "head" in blobs else ONNX_FORMATS[0],
        "arch": str(meta["arch"]),
        "class_names": json.dumps(list(meta["class_names"]), ensure_ascii=False),
        "input_size": str(int(meta["input_size"])),
        "mean": json.dumps([float(m) for m in meta["mean"]]),
        "std": json.dumps([float(s) for s in meta["std"]]),
        "precision": precision,
        "preprocessing": PREPROCESSING,
        # Everything else (training config, val metrics, export checks) for provenance.
        "marsvision_meta": json.dumps({k: v for k, v in meta.items() if k not in core}, ensure_ascii=False),
        **blobs,
    }


def parse_metadata(props: dict[str, str], where: str) -> dict:
    """ONNX ``metadata_props`` → the same ``meta`` dict a torch checkpoint has; ``ModelFileError`` if foreign."""
    if props.get("marsvision_format") not in ONNX_FORMATS:
        raise ModelFileError(
            f"{where}: an ONNX model without marsvision metadata (class names, input size, "
            f"normalisation); export one with `marsvision export`"
        )
    try:
        meta = dict(json.loads(props.get("marsvision_meta", "{}")))
        meta.update(
            format=props["marsvision_format"],
            arch=props["arch"],
            class_names=json.loads(props["class_names"]),
            input_size=int(props["input_size"]),
            mean=json.loads(props["mean"]),
            std=json.loads(props["std"]),
            precision=props.get("precision", "fp32"),
        )
        meta.update({k: json.loads(props[k]) for k in ("head", "trust") if k in props})
        if meta["format"] == ONNX_FORMAT and "head" not in meta:
            raise ValueError("a features graph without its head")
        names, mean, std = meta["class_names"], meta["mean"], meta["std"]
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise ValueError("class_names must be a non-empty list of strings")
        if len(mean) != 3 or len(std) != 3 or not all(float(s) > 0 for s in std) or meta["input_size"] < 1:
            raise ValueError("mean/std must be 3 numbers (std > 0) and input_size positive")
    except (KeyError, ValueError, TypeError) as e:
        raise ModelFileError(f"{where}: broken marsvision metadata ({type(e).__name__}: {e})") from None
    return meta
