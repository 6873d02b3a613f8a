"""The frozen-feature probe: ImageNet EfficientNet-Lite features + a class-balanced logistic regression.

The fitted linear model is folded into the network's classifier layer, so the result is an
ordinary marsvision model file that ``load_model``/``predict``/``evaluate`` use unchanged. The
bundled model is this probe (multi-level Lite0 features, 192 px, fitted on train+val at C = 1).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from ..data.msl import DATA_HELP, MSLDataset, decode_many, sol_of
from ..head.fit import fit_head, fold_head
from ..head.trust import fit_trust
from ..model_file import model_meta
from ..nets.checkpoint import save_model
from ..nets.models import create_model, model_defaults
from .augment import EvalPreset
from .engine import predict_logits, run_folder

C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass
class ProbeConfig:
    """Fit a balanced logistic regression on frozen ImageNet EfficientNet-Lite features."""

    model: str = field(
        default="efficientnet_lite0",
        metadata={"help": "backbone: efficientnet_lite0, efficientnet_lite0_multilevel or efficientnet_lite2"},
    )
    data: str = field(default="", metadata={"help": DATA_HELP})
    train_splits: str = field(default="train", metadata={"help": "splits to fit on, '+'-joined"})
    val_split: str = field(default="val", metadata={"help": "split used to choose C (when not fitted on)"})
    img_size: int = field(
        default=0, metadata={"help": "input size in pixels (0: the backbone's default); the model file records it"}
    )
    c: float = field(
        default=0.0,
        metadata={"help": f"inverse regularisation strength (0: choose on val from {', '.join(map(str, C_GRID))})"},
    )
    out: str = field(default="runs", metadata={"help": "runs root: the run folder is <out>/probe/<name>"})
    name: str = field(default="", metadata={"help": "run folder name (default: <model>-<time>)"})
    limit: int = field(default=0, metadata={"help": "use at most this many images per split (0: all); for smoke tests"})
    trust: bool = field(
        default=True,
        metadata={
            "help": "fit calibrated confidence and unknown-image data on the fitted images (as `marsvision calibrate`)"
        },
    )


def extract_features(backbone, images_u8: torch.Tensor, preset) -> np.ndarray:
    """(N, S, S, 3) uint8 → (N, F) pooled features (classifier removed)."""
    return predict_logits(backbone, images_u8, preset, torch.device("cpu")).numpy()


@torch.no_grad()
def extract_embedding(backbone, images_u8: torch.Tensor, preset, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S, 3) uint8 → pooled features (N, F) and texture (N, C), the spatial standard deviation of
    each channel of the last feature map, as every runtime computes them (``Classifier.embed``)."""
    from ..nets.device import autocast
    from ..nets.models import feature_maps, last_map_channels, pooled_and_texture

    backbone.eval()
    channels, cpu, feats, texture = last_map_channels(backbone), torch.device("cpu"), [], []
    for chunk in images_u8.split(batch_size):
        x = preset(chunk).contiguous(memory_format=torch.channels_last)
        with autocast(cpu):
            maps = feature_maps(backbone, x).float()
        pooled, tex = pooled_and_texture(maps, channels)
        feats.append(pooled)
        texture.append(tex)
    return torch.cat(feats).numpy(), torch.cat(texture).numpy()


def frozen_backbone(model: str) -> tuple[torch.nn.Module, EvalPreset]:
    """The ImageNet backbone with its classifier removed (eval mode) and its eval preset."""
    d = model_defaults(model)
    backbone = create_model(model, 1, pretrained=True).eval()
    backbone.reset_classifier(0)
    return backbone, EvalPreset(d["mean"], d["std"])


def train_probe(cfg: ProbeConfig, progress: bool | None = None) -> Path:
    """Fit, pick C on val macro-F1, fold into a model file; returns its path (``<run folder>/best.pt``).

    The run folder also gets config.json (the resolved config) and results.json (the C chosen, val
    macro-F1 by C, image counts and timings).
    """
    from sklearn.metrics import f1_score

    progress = sys.stderr.isatty() if progress is None else progress
    start = time.perf_counter()
    run_dir = run_folder(cfg.out, "probe", cfg.name or f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    ds = MSLDataset(cfg.data or None)
    d = model_defaults(cfg.model)
    size = cfg.img_size or d["input_size"]
    train = ds.splits(cfg.train_splits.split("+"))
    class_ids = sorted(set(train.labels.tolist()))
    train = train.subset(cfg.limit or None)
    backbone, preset = frozen_backbone(cfg.model)
    timing = {"images": 0, "seconds": 0.0}

    def feats(paths) -> tuple[np.ndarray, np.ndarray]:
        t0 = time.perf_counter()
        f = extract_embedding(backbone, torch.from_numpy(decode_many(paths, size, progress=progress)), preset)
        timing["images"] += len(paths)
        timing["seconds"] += time.perf_counter() - t0
        return f

    to_index = {c: i for i, c in enumerate(class_ids)}
    (x_tr, t_tr), y_tr = feats(train.paths), np.array([to_index[c] for c in train.labels])
    grid = [cfg.c] if cfg.c > 0 else list(C_GRID)
    fitted = {c: fit_head(x_tr, y_tr, c) for c in grid}
    scores = {}
    if len(grid) > 1:
        val = ds.split(cfg.val_split).subset(cfg.limit or None)
        keep = [i for i, c in enumerate(val.labels) if c in to_index]
        x_va = feats([val.paths[i] for i in keep])[0]
        y_va = np.array([to_index[c] for c in val.labels[keep]])
        scores = {c: f1_score(y_va, pipe.predict(x_va), average="macro") for c, pipe in fitted.items()}
    best_c = max(scores, key=scores.get) if scores else grid[0]
    w, b = fold_head(fitted[best_c], len(class_ids))
    model = backbone  # the same frozen ImageNet weights, now with the fitted head
    model.reset_classifier(len(class_ids))
    head = model.get_classifier()
    head.weight.data, head.bias.data = torch.from_numpy(w), torch.from_numpy(b)
    names = [ds.class_names[c] for c in class_ids]
    meta = model_meta(
        cfg.model,
        names,
        size,
        d["mean"],
        d["std"],
        0.0,
        config=asdict(cfg),
        metrics={"C": best_c, "val_macro_f1_by_C": scores},
    )
    trust = None
    if cfg.trust:
        try:
            trust = fit_trust(x_tr, t_tr, y_tr, np.array([sol_of(p) for p in train.paths]), len(class_ids), best_c)
            meta["trust"] = trust.to_dict()
        except ValueError as e:  # too few images or campaigns (a smoke test): a model without trust data
            print(f"probe: calibration and novelty not fitted: {e}", file=sys.stderr)
    out = run_dir / "best.pt"
    save_model(out, model, meta)
    total = time.perf_counter() - start
    feature_rate = timing["images"] / max(timing["seconds"], 1e-9)
    with atomic_write(run_dir / "config.json") as f:
        json.dump({**asdict(cfg), "run_dir": str(run_dir), "input_size": size}, f, indent=2)
    with atomic_write(run_dir / "results.json") as f:
        json.dump(
            {
                "chosen_C": best_c,
                "val_macro_f1_by_C": scores,
                "n_train": len(train),
                "feature_img_per_s": round(feature_rate, 1),
                "total_s": round(total, 1),
                "calibration": trust and trust.calibration.info,
                "novelty": trust and trust.novelty.info,
            },
            f,
            indent=2,
        )
    print(
        f"probe: C={best_c}, {len(train)} training images, features {feature_rate:.1f} img/s "
        f"(decode + forward), total {total:.0f} s"
    )
    return out
