"""The files of a refitted model version: the parent's ONNX file read once (``ParentFile``), and the new
version written from it (the same graph with new metadata) with a torch twin when the parent has one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_save
from ..errors import require
from ..inference.classifier import Classifier
from ..inference.predict import load_model
from ..inference.trust import Head, Trust
from ..model_file import ModelFileError, parse_metadata


@dataclass
class ParentFile:
    """The parent version's ONNX file, read and parsed once: the graph a refit writes again with new
    metadata, and what the refit reads from that metadata (class names, head, trust). A runtime for it
    is started only to compute the training images' features, once per archive (``classifier``); a refit
    used to start one every time and parse the file a second time to write the new version (~0.1 s)."""

    path: Path
    proto: Any  # onnx.ModelProto
    meta: dict
    head: Head | None
    trust: Trust

    @classmethod
    def read(cls, path: str | Path) -> ParentFile:
        onnx = require("onnx", "refit", "archive")
        path = Path(path)
        try:
            proto = onnx.load(str(path))
        except Exception as e:  # DecodeError, OSError...: the file is not a model
            raise ModelFileError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
        meta = parse_metadata({p.key: p.value for p in proto.metadata_props}, str(path))
        try:
            head = Head.from_dict(meta["head"]) if "head" in meta else None
        except (KeyError, ValueError, TypeError) as e:
            raise ModelFileError(f"{path}: broken head in the metadata ({type(e).__name__}: {e})") from None
        return cls(path, proto, meta, head, Trust.from_dict(meta.get("trust")))

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def classifier(self) -> Classifier:
        """The parent run by ONNX Runtime (for the training images' features)."""
        return load_model(self.path)


def write_version(parent: ParentFile, out_dir: Path, meta_update: dict, head: Head, trust: Trust) -> dict:
    """The parent's ONNX file with new metadata (and a torch twin when possible); returns the files."""
    import onnx

    from ..export.head import with_metadata

    parent_path, proto = parent.path, parent.proto
    meta = dict(parent.meta)
    graph = proto.graph.SerializeToString()
    meta.update(meta_update)
    meta["head"] = {**head.to_dict(), "maps": meta["head"].get("maps", [])}
    meta["trust"] = trust.to_dict()
    name = parent_path.name if parent_path.name.endswith(".onnx") else parent_path.name + ".onnx"
    onnx_out = out_dir / name
    proto = with_metadata(proto, meta)
    assert proto.graph.SerializeToString() == graph  # the graph and its int8 weights are the parent's
    atomic_save(lambda tmp: onnx.save(proto, tmp), onnx_out)
    files = {"onnx": str(onnx_out), "torch": None}
    source = (meta.get("source") or {}).get("file")
    torch_src = parent_path.with_name(source) if source else None
    if torch_src is not None and torch_src.is_file():
        try:
            import torch  # noqa: F401
        except ImportError:
            files["torch_note"] = "torch is not installed: no torch file"
        else:
            files["torch"] = str(write_torch_twin(torch_src, out_dir / torch_src.name, meta, head, trust))
    return files


def write_torch_twin(src: Path, dst: Path, meta: dict, head: Head, trust: Trust) -> Path:
    import torch

    from ..nets.checkpoint import build_model, read_model_file, save_model
    from ..nets.models import linear_head

    ckpt = read_model_file(src)
    model = (
        build_model({**ckpt, "class_names": meta["class_names"]})
        if len(meta["class_names"]) == len(ckpt["class_names"])
        else _grown(ckpt, len(meta["class_names"]))
    )
    layer = linear_head(model)
    layer.weight.data, layer.bias.data = torch.from_numpy(head.weight.copy()), torch.from_numpy(head.bias.copy())
    keep = {k: v for k, v in ckpt.items() if k != "state_dict"}
    save_model(
        dst,
        model,
        {
            **keep,
            "class_names": meta["class_names"],
            "trust": trust.to_dict(),
            "config": meta.get("config", {}),
            "metrics": meta.get("metrics", {}),
        },
        half=True,
    )
    return dst


def _grown(ckpt: dict, classes: int):
    """The checkpoint's network with a classifier of ``classes`` outputs (new classes from corrections)."""
    from ..nets.checkpoint import build_model
    from ..nets.models import create_model

    model = create_model(ckpt["arch"], classes, pretrained=False)
    old = build_model(ckpt).state_dict()
    model.load_state_dict(
        {k: v for k, v in old.items() if k in model.state_dict() and model.state_dict()[k].shape == v.shape},
        strict=False,
    )
    return model.eval()
