"""Baseline (b): frozen ImageNet EfficientNet-Lite features + balanced logistic regression.

The fitted linear model is folded into the network's classifier layer, so the result is an
ordinary marsvision model file that ``load_model``/``predict``/``evaluate`` use unchanged. With
``tune_epochs`` the last stages are then fine-tuned from it (``probe_tuning``), still one file.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write
from .checkpoint import model_meta, save_model
from .data import SPLITS, DataError, MSLDataset, decode_many, sol_of
from .metrics import classification_metrics, paired_scores
from .models import create_model, model_defaults
from .predict import expand_inputs
from .probe_tuning import (ProbeTail, average, frozen_stage_maps, interpolate, probe_features, tail_outputs,
                           tune_tail)
from .train import predict_logits
from .transforms import EvalPreset


@dataclass
class ProbeConfig:
    """Fit a balanced logistic regression on frozen ImageNet EfficientNet-Lite features."""

    model: str = field(default="efficientnet_lite0", metadata={"help": "backbone: efficientnet_lite0, efficientnet_lite0_multilevel or efficientnet_lite2"})
    data: str = field(default="", metadata={"help": "data set folder (default: $MARSVISION_DATA, then ./data/msl-images)"})
    train_splits: str = field(default="train", metadata={"help": "splits to fit on, '+'-joined"})
    val_split: str = field(default="val", metadata={"help": "split used to choose C (when not fitted on)"})
    img_size: int = field(default=0, metadata={"help": "input size in pixels (0: the backbone's default); the model file records it"})
    c: float = field(default=0.0, metadata={"help": "inverse regularisation strength (0: choose on val from a grid)"})
    out: str = field(default="runs/probe-lite0/best.pt", metadata={"help": "model file to write"})
    limit: int = field(default=0, metadata={"help": "use at most this many images per split (0: all)"})
    tune_epochs: int = field(default=0, metadata={"help": "then fine-tune the last two stages and the head from the probe for this many epochs (multi-level model only; 0: frozen probe)"})
    tune_lr: float = field(default=1e-3, metadata={"help": "peak learning rate of that tuning"})
    tune_alpha: float = field(default=0.75, metadata={"help": "WiSE-FT: keep (1 - alpha) * probe + alpha * tuned weights"})
    tune_views: int = field(default=3, metadata={"help": "cached views per training image for the tuning (the image, then mild random crops)"})
    tune_seeds: int = field(default=3, metadata={"help": "average the weights of this many tunings with seeds 0, 1, ... (a model soup) before the interpolation; one tuning alone can lose 5 pt of val accuracy (partial_finetune_soup.md)"})
    drift_dims: int = field(default=0, metadata={"help": "project out this many directions in which class features drift between periods of sols (0: none; SolDrift, probe_forward.md)"})
    drift_periods: int = field(default=4, metadata={"help": "periods of about equal image count that the training sols are cut into for that"})
    adapt: str = field(default="", metadata={"help": "self-train on these unlabelled images after the fit: a split name (its labels are not used) or a folder; transductive, so the model is then specialised for them (probe_forward.md)"})
    adapt_threshold: float = field(default=0.9, metadata={"help": "pseudo-label only adaptation images whose top probability is at least this"})
    adapt_weight: float = field(default=0.5, metadata={"help": "weight of the pseudo-labelled images relative to the labelled ones (each part class-balanced)"})


def extract_features(backbone, images_u8: torch.Tensor, preset) -> np.ndarray:
    """(N, S, S, 3) uint8 → (N, F) pooled features (classifier removed)."""
    return predict_logits(backbone, images_u8, preset, torch.device("cpu")).numpy()


def fit_head(x: np.ndarray, y: np.ndarray, c: float, sample_weight: np.ndarray | None = None):
    """The probe's classifier on (N, F) features: standardise, then a logistic regression that is
    class-balanced unless ``sample_weight`` is given. Returns the fitted scikit-learn pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    balance = "balanced" if sample_weight is None else None
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight=balance, max_iter=3000))
    return pipe.fit(x, y, logisticregression__sample_weight=sample_weight)


@dataclass
class SolDrift:
    """Directions in which the features of a class move from one period of sols to the next, projected out.

    Under the sol-based splits the enemy is time: lighting, dust and the rover's state change between
    periods, and a probe that leans on such directions fails on later sols. Fitted on labelled
    features only (their sols come from the file names), so it is inductive. ``transform`` maps
    (N, F) features to standardised ones with the ``dims`` strongest drift directions removed.
    """

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    basis: np.ndarray  # (F, dims), orthonormal columns

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, sols: np.ndarray, dims: int, periods: int = 4) -> SolDrift:
        """Cut ``sols`` into ``periods`` of about equal image count; the drift of class c in period p is
        the mean of its standardised features there minus its overall mean. The basis spans the top
        eigenvectors of the count-weighted scatter of these drifts (within-class, between-period)."""
        mean, scale = x.mean(0), x.std(0) + 1e-6
        z = (x - mean) / scale
        period = np.digitize(sols, np.quantile(sols, np.arange(1, periods) / periods))
        scatter = np.zeros((x.shape[1],) * 2)
        for c in np.unique(y):
            of_c = y == c
            centre = z[of_c].mean(0)
            for p in np.unique(period[of_c]):
                rows = of_c & (period == p)
                if rows.sum() >= 2:  # one image is no estimate of a period's mean
                    d = z[rows].mean(0) - centre
                    scatter += rows.sum() * np.outer(d, d)
        _, vectors = np.linalg.eigh(scatter)  # ascending eigenvalues
        return cls(mean, scale, vectors[:, ::-1][:, :dims].copy())

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        return z - (z @ self.basis) @ self.basis.T

    def fold(self, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A linear layer (K, F), (K,) on transformed features as the same layer on raw features."""
        w = (w - (w @ self.basis) @ self.basis.T) / self.scale  # the projection is symmetric
        return w.astype(np.float32), (b - w @ self.mean).astype(np.float32)


def self_train(x: np.ndarray, y: np.ndarray, pool: np.ndarray, c: float, threshold: float = 0.9,
               weight: float = 0.5, sample_weight: np.ndarray | None = None, first=None) -> tuple:
    """Adapt ``fit_head`` to unlabelled images of a later period by one round of pseudo-labels (Lee, 2013).

    Fit on (x, y); label the ``pool`` images (M, F) whose top probability is ≥ ``threshold``; refit on
    both, the pseudo-labelled ones class-balanced among themselves and scaled by ``weight``. The labelled
    part keeps ``sample_weight`` (default: class-balanced, mean 1). ``first``: that first fit, if the
    caller already made it. Returns (pipeline, kept mask (M,)).
    """
    def balanced(labels):
        count = np.bincount(labels)
        return len(labels) / (np.count_nonzero(count) * count[labels])

    first = first if first is not None else fit_head(x, y, c, sample_weight=sample_weight)
    proba = first.predict_proba(pool)  # (M, K) over first.classes_
    kept = proba.max(1) >= threshold
    pseudo = first.classes_[proba[kept].argmax(1)]
    w = np.concatenate([balanced(y) if sample_weight is None else sample_weight, weight * balanced(pseudo)])
    return fit_head(np.concatenate([x, pool[kept]]), np.concatenate([y, pseudo]), c, sample_weight=w), kept


def fold_head(pipe, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``fit_head`` pipeline as one linear layer: weight (K, F) and bias (K,) float32.

    logits = W (x - mu) / sigma + b  =  (W / sigma) x + (b - W mu / sigma); a class absent from the
    fitted labels gets bias -1e4, so it is never predicted.
    """
    scaler, clf = pipe[0], pipe[-1]
    w = np.zeros((num_classes, len(scaler.scale_)), np.float32)
    b = np.full(num_classes, -1e4, np.float32)
    w[clf.classes_] = clf.coef_ / scaler.scale_
    b[clf.classes_] = clf.intercept_ - (clf.coef_ * (scaler.mean_ / scaler.scale_)).sum(1)
    return w, b


def frozen_backbone(model: str) -> tuple[torch.nn.Module, EvalPreset]:
    """The ImageNet backbone with its classifier removed (eval mode) and its eval preset."""
    d = model_defaults(model)
    backbone = create_model(model, 1, pretrained=True).eval()
    backbone.reset_classifier(0)
    return backbone, EvalPreset(d["mean"], d["std"])


def train_probe(cfg: ProbeConfig, progress: bool | None = None) -> Path:
    """Fit, pick C on val macro-F1, fold into a model file; returns its path."""
    from sklearn.metrics import f1_score

    progress = sys.stderr.isatty() if progress is None else progress
    start = time.perf_counter()
    ds = MSLDataset(cfg.data or None)
    d = model_defaults(cfg.model)
    size = cfg.img_size or d["input_size"]
    train = ds.splits(cfg.train_splits.split("+"))
    class_ids = sorted(set(train.labels.tolist()))
    train = train.subset(cfg.limit or None)
    tuning = cfg.tune_epochs > 0
    if tuning and cfg.model != "efficientnet_lite0_multilevel":
        raise ValueError(f"--tune-epochs needs --model efficientnet_lite0_multilevel, not {cfg.model!r}")
    if tuning and cfg.adapt:
        raise ValueError("--adapt works on the frozen probe; leave out --tune-epochs")
    if cfg.adapt in cfg.train_splits.split("+"):
        raise ValueError(f"--adapt {cfg.adapt}: that split is already fitted on with its labels")
    backbone, preset = frozen_backbone(cfg.model)

    timing = {"images": 0, "seconds": 0.0}

    def feats(paths, views=1, errors=None):
        """(N, F) features, and when tuning the frozen-stage maps (V, N, ...) they were computed from."""
        t0 = time.perf_counter()
        u8 = torch.from_numpy(decode_many(paths, size, progress=progress, errors=errors))
        maps = frozen_stage_maps(backbone, u8, preset, views) if tuning else None
        f = probe_features(backbone, maps[0]) if tuning else extract_features(backbone, u8, preset)
        timing["images"] += len(paths)
        timing["seconds"] += time.perf_counter() - t0
        return f, maps

    to_index = {c: i for i, c in enumerate(class_ids)}
    (x_tr, maps_tr), y_tr = feats(train.paths, cfg.tune_views), np.array([to_index[c] for c in train.labels])
    drift = None
    if cfg.drift_dims:
        drift = SolDrift.fit(x_tr, y_tr, np.array([sol_of(p) for p in train.paths]), cfg.drift_dims, cfg.drift_periods)
        x_tr = drift.transform(x_tr)
    grid = [cfg.c] if cfg.c > 0 else [0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    fitted = {c: fit_head(x_tr, y_tr, c) for c in grid}
    scores, maps_va, y_va = {}, None, None
    # A tuning is checked on val when val is not fitted on: one tuning alone can lose 5 pt there.
    if len(grid) > 1 or (tuning and cfg.val_split not in cfg.train_splits.split("+")):
        val = ds.split(cfg.val_split).subset(cfg.limit or None)
        keep = [i for i, c in enumerate(val.labels) if c in to_index]
        x_va, maps_va = feats([val.paths[i] for i in keep])
        x_va = drift.transform(x_va) if drift else x_va
        y_va = np.array([to_index[c] for c in val.labels[keep]])
        if len(grid) > 1:
            scores = {c: f1_score(y_va, pipe.predict(x_va), average="macro") for c, pipe in fitted.items()}
    best_c = max(scores, key=scores.get) if scores else grid[0]
    pipe, adapted = fitted[best_c], None
    if cfg.adapt:
        pool, errors = adaptation_images(ds, cfg.adapt), []
        x_pool, _ = feats(pool, errors=errors)
        x_pool = drift.transform(x_pool) if drift else x_pool
        readable = readable_rows(errors, len(pool), cfg.adapt)
        pipe, kept = self_train(x_tr, y_tr, x_pool[readable], best_c, cfg.adapt_threshold, cfg.adapt_weight,
                                first=pipe)
        adapted = {"images": len(readable), "unreadable": len(errors), "pseudo_labelled": int(kept.sum())}
    w, b = fold_head(pipe, len(class_ids))
    w, b = drift.fold(w, b) if drift else (w, b)
    model = backbone  # the same frozen ImageNet weights, now with the fitted head
    model.reset_classifier(len(class_ids))
    head = model.get_classifier()
    head.weight.data, head.bias.data = torch.from_numpy(w), torch.from_numpy(b)
    names = [ds.class_names[c] for c in class_ids]
    tune_rate, tune_val = None, None
    if tuning:
        probe = ProbeTail(model, head.weight.data, head.bias.data)
        members, rates = zip(*[tune_tail(probe, maps_tr, np.arange(len(y_tr)), y_tr, cfg.tune_lr, cfg.tune_epochs,
                                         seed=seed, progress=progress) for seed in range(cfg.tune_seeds)])
        tune_rate = float(np.mean(rates))
        tuned = interpolate(probe, average(list(members)), cfg.tune_alpha)
        tuned.fold_into(model)
        if maps_va is not None:
            tune_val = tuning_on_val(probe, tuned, maps_va[0], y_va, names)
    out = Path(cfg.out)
    save_model(out, model, model_meta(cfg.model, names, size, d["mean"], d["std"], 0.0,
                                      config=asdict(cfg), metrics={"C": best_c, "val_macro_f1_by_C": scores,
                                                                            "tune_val": tune_val, "adapted": adapted}))
    total = time.perf_counter() - start
    feature_rate = timing["images"] / max(timing["seconds"], 1e-9)
    with atomic_write(out.parent / "config.json") as f:
        json.dump({**asdict(cfg), "chosen_C": best_c, "val_macro_f1_by_C": scores, "n_train": len(train),
                   "feature_img_per_s": round(feature_rate, 1), "total_s": round(total, 1),
                   "tune_img_per_s": tune_rate and round(tune_rate, 1), "tune_val": tune_val,
                   "adapted": adapted}, f, indent=2)
    tuned_msg = f", tuning {tune_rate:.0f} img/s" if tuning else ""
    if adapted:
        tuned_msg += (f", self-trained on {adapted['pseudo_labelled']} of {adapted['images']} unlabelled "
                      f"{cfg.adapt} images")
    print(f"probe: C={best_c}, {len(train)} training images, features {feature_rate:.1f} img/s "
          f"(decode + forward){tuned_msg}, total {total:.0f} s")
    if tune_val:
        (lo, hi), (flo, fhi) = tune_val["accuracy_diff"], tune_val["macro_f1_diff"]
        print(f"{cfg.val_split} (not fitted on), accuracy / macro-F1: probe {tune_val['probe']['accuracy']:.3f} / "
              f"{tune_val['probe']['macro_f1']:.3f}, tuned {tune_val['tuned']['accuracy']:.3f} / "
              f"{tune_val['tuned']['macro_f1']:.3f}; tuned − probe, 95 % interval: {lo:+.3f}..{hi:+.3f} / {flo:+.3f}..{fhi:+.3f}")
    return out


def adaptation_images(ds: MSLDataset, source: str) -> list[Path]:
    """Image paths of ``source``: a split of ``ds`` (paths only, its labels are not used) or a folder."""
    if source in SPLITS:
        return ds.split(source).paths
    files, missing = expand_inputs([source])
    if missing or not files:
        raise DataError(f"{source}: not a split ({', '.join(SPLITS)}) nor a folder holding images")
    return files


def readable_rows(errors: list[tuple[int, str]], n: int, source: str) -> np.ndarray:
    """Indices of the ``n`` adaptation images that decoded; each unreadable one is named on stderr."""
    for _, msg in sorted(errors):
        print(f"skipped for adaptation: {msg}", file=sys.stderr)
    rows = np.setdiff1d(np.arange(n), [i for i, _ in errors])
    if not len(rows):
        raise DataError(f"{source}: none of its {n} images could be read")
    return rows


def tuning_on_val(probe: ProbeTail, tuned: ProbeTail, maps: torch.Tensor, y: np.ndarray, names: list[str]) -> dict:
    """Accuracy and macro-F1 of the probe and of its tuned version on val maps (N, 112, S/16, S/16),
    with paired bootstrap intervals of the differences (tuned − probe)."""
    base, pred = (tail_outputs(m, maps).argmax(1).numpy() for m in (probe, tuned))
    scores = paired_scores(y, pred, base, names)
    own = classification_metrics(y, base, names)
    return {"probe": {"accuracy": own["accuracy"], "macro_f1": own["macro_f1"]},
            "tuned": {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]},
            "accuracy_diff": scores["accuracy_diff"], "macro_f1_diff": scores["macro_f1_diff"]}
