"""`marsvision calibrate`: fit a model file's calibration and novelty data and write them into the file.

The data are fitted on the model's own outputs for the images it was fitted on (its training splits),
campaign by campaign (``marsvision.head.trust``), so an int8 file gets data that fit its int8 features.
An ONNX file of the older format (a logits graph) is converted on the way: its classifier moves into
the metadata (``export.head.split_head``), which novelty and explanations need.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_save
from ..data.msl import DATA_HELP, MSLDataset, sol_of
from ..errors import UsageError
from ..inference.classifier import Classifier
from ..inference.predict import load_model
from ..inference.trust import Trust
from ..model_file import ModelFileError, model_kind


@dataclass
class CalibrateConfig:
    """Fit a model file's calibrated confidence and unknown-image data on its training splits."""

    model: str = field(metadata={"help": "model file (.onnx or .pt) to calibrate"})
    data: str = field(default="", metadata={"help": DATA_HELP})
    splits: str = field(
        default="",
        metadata={
            "help": "'+'-joined splits the model was fitted on (default: the file's training config, else train)"
        },
    )
    c: float = field(
        default=0.0, metadata={"help": "C of the head refits used to hold campaigns out (default: the file's, else 1)"}
    )
    output: str = field(
        default="", metadata={"help": "write the calibrated file here (default: replace the model file)"}
    )
    threads: int = field(default=0, metadata={"help": "CPU threads (0: all)"})
    novelty_only: bool = field(
        default=False,
        metadata={
            "help": "refit the unknown-image data only: keep the file's calibration and its texture novelty "
            "(confidences unchanged), fit the features part and the threshold"
        },
    )


def embed_split(clf: Classifier, dataset: MSLDataset, splits: str, progress: bool = False):
    """Features (N, F), texture (N, C), class indices (N,) into ``clf.class_names``, sols (N,) and paths
    of the images of ``splits`` whose class the model knows. An unreadable image stops it (training data)."""
    from tqdm import tqdm

    split = dataset.splits(splits.split("+"))
    names = [dataset.class_names[int(c)] for c in split.labels]
    keep = [i for i, n in enumerate(names) if n in clf.class_names]
    paths = [split.paths[i] for i in keep]
    feats, textures = [], []
    for p in tqdm(
        clf.predict_iter(paths, batch_size=16),
        total=len(paths),
        desc=f"embed {splits}",
        unit="img",
        disable=not progress,
    ):
        if not p.ok:
            raise ModelFileError(f"{p.source}: {p.error}")
        feats.append(p.features)
        textures.append(p.texture)
    labels = np.array([clf.class_names.index(names[i]) for i in keep])
    return np.stack(feats), np.stack(textures), labels, np.array([sol_of(p) for p in paths]), paths


def fit_model_trust(
    clf: Classifier, dataset: MSLDataset, splits: str, c: float, progress: bool = False, novelty_only: bool = False
) -> Trust:
    from ..head.trust import fit_trust

    features, texture, labels, sols, _ = embed_split(clf, dataset, splits, progress)
    if novelty_only:
        trust = refit_novelty(clf.trust, features, texture, sols)
    else:
        trust = fit_trust(features, texture, labels, sols, len(clf.class_names), c)
    trust.novelty.info["fitted_on_splits"] = splits
    trust.calibration.info["fitted_on_splits"] = splits
    return trust


def refit_novelty(old: Trust, features: np.ndarray, texture: np.ndarray, sols: np.ndarray) -> Trust:
    """``old``'s calibration and texture part, fitted on these images before, kept as they are, with the
    features part and the unknown threshold fitted anew. A whole refit re-embeds the images, and
    onnxruntime's float rounding differs between machines (the bundled file's texture scores moved by
    1e-5 on a rerun), which would move confidences for the unknown flag's sake."""
    from ..head.trust import fit_novelty

    part = old.novelty and old.novelty.part("texture")
    # a one-part file's novelty is its texture part's score when its joint threshold is 1
    one_part = old.novelty is not None and len(old.novelty.parts) == 1 and old.novelty.threshold == 1.0
    if part is None or old.calibration is None or not (old.calibration.reads == "texture" or one_part):
        raise UsageError("--novelty-only needs a calibrated file whose calibration reads the texture novelty")
    novelty = fit_novelty(features, texture, sols, texture_part=part)
    novelty.info["texture_part"] = "kept from the file (calibrate --novelty-only)"
    return Trust(replace(old.calibration, reads="texture"), novelty)


def write_onnx_trust(src: Path, dst: Path, trust: Trust) -> None:
    """Copy the ONNX file ``src`` to ``dst`` (atomically) as a features graph carrying ``trust``."""
    import onnx

    from .head import features_model, with_metadata

    proto, meta = features_model(onnx.load(str(src)), str(src))
    proto = with_metadata(proto, {**meta, "trust": trust.to_dict()})
    atomic_save(lambda tmp: onnx.save(proto, tmp), dst)


def write_torch_trust(src: Path, dst: Path, trust: Trust) -> None:
    import torch

    from ..nets.checkpoint import read_model_file

    ckpt = read_model_file(src)
    ckpt["trust"] = trust.to_dict()
    atomic_save(lambda tmp: torch.save(ckpt, tmp), dst)


def run_calibrate(cfg: CalibrateConfig, progress: bool | None = None) -> Path:
    """`marsvision calibrate`: fit, write, print what was measured on the held-out campaigns."""
    progress = sys.stderr.isatty() if progress is None else progress
    t0 = time.perf_counter()
    src = Path(cfg.model)
    dataset = MSLDataset(cfg.data or None)
    clf = load_model(src, threads=cfg.threads or None)
    if clf.head is None:  # an older ONNX file (a logits graph): calibrate its features graph
        import tempfile

        import onnx

        from .head import features_model

        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(features_model(onnx.load(str(src)), str(src))[0], f"{tmp}/features.onnx")
            trust = _fit(load_model(f"{tmp}/features.onnx", threads=cfg.threads or None), dataset, cfg, progress)
    else:
        trust = _fit(clf, dataset, cfg, progress)
    dst = Path(cfg.output) if cfg.output else src
    (write_onnx_trust if model_kind(src) == "onnx" else write_torch_trust)(src, dst, trust)
    cal, nov = trust.calibration.info, trust.novelty.info
    print(
        f"calibrated {dst} on {nov['fitted_on_splits']} ({nov['images']} images, {time.perf_counter() - t0:.0f} s): "
        f"held-out campaigns accuracy {cal['held_out_accuracy']:.3f}, ECE {cal['held_out_ece_before']:.4f} → "
        f"{cal['held_out_ece_after']:.4f}; the unknown threshold is the {nov['joint_quantile']:.1%} quantile of "
        f"the novelty against other campaigns{_forward_note(nov)}"
    )
    return dst


def _forward_note(info: dict) -> str:
    f = info.get("forward", {})
    if "quantile" not in f:
        return ""
    return (
        f", chosen so that a novelty fitted on the {f['fitted']} images before sol {f['cut_sol']:.0f} flags "
        f"{f['target']:.0%} of the {f['scored']} after it"
    )


def _fit(clf: Classifier, dataset: MSLDataset, cfg: CalibrateConfig, progress: bool) -> Trust:
    config = clf.meta.get("config", {})
    splits = cfg.splits or config.get("train_splits") or "train"
    c = cfg.c or float(clf.meta.get("metrics", {}).get("C") or config.get("c") or 1.0)
    trust = fit_model_trust(clf, dataset, splits, c, progress, cfg.novelty_only)
    if cfg.novelty_only:
        trust.novelty.info["config"] = {**asdict(cfg), "splits": splits}
    else:
        trust.calibration.info["config"] = {**asdict(cfg), "splits": splits, "c": c}
    json.dumps(trust.to_dict())  # plain data, or fail before writing
    return trust
