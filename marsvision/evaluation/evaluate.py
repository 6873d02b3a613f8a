"""Evaluate a model file on an official split and write a report folder."""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write
from ..data.msl import DATA_HELP, DataError, MSLDataset
from ..inference.classifier import Classifier
from ..inference.predict import BATCH_HELP, THREADS_HELP
from ..metrics import (
    bootstrap_ci,
    calibration_bins,
    classification_metrics,
    coverage_accuracy_curve,
    expected_calibration_error,
    format_table,
    full_confusion_matrix,
    most_confused_pairs,
    selective_accuracy,
)


@dataclass
class EvaluateConfig:
    """Evaluate a model on an official split: metrics table, metrics.json, predictions.csv, plots."""

    model: str = field(default="", metadata={"help": "model file (default: the bundled model)"})
    split: str = field(default="test", metadata={"help": "split to evaluate: train, val or test"})
    data: str = field(default="", metadata={"help": DATA_HELP})
    out: str = field(default="", metadata={"help": "report folder (default: reports/<model>-<split>)"})
    batch_size: int = field(default=0, metadata={"help": BATCH_HELP})
    threads: int = field(default=0, metadata={"help": THREADS_HELP})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    limit: int = field(default=0, metadata={"help": "evaluate at most this many images (0: all); for smoke tests"})


def evaluate_split(
    clf: Classifier,
    dataset: MSLDataset,
    split: str,
    out_dir: Path,
    batch_size: int = 0,
    limit: int = 0,
    progress: bool = True,
) -> dict:
    """Predict every image of ``split``, compute metrics, write the report files; returns metrics.

    Report files: metrics.json (accuracy, F1, intervals, calibration, selective labels, unknown share),
    predictions.csv, and the plots confusion_matrix.png, error_gallery.png (with heatmaps),
    reliability.png and coverage_accuracy.png. The plots need matplotlib (the ``[train]`` or ``[plots]``
    extra); without it they are skipped with a one-line notice and everything else is written.
    """
    from tqdm import tqdm

    data = dataset.split(split).subset(limit or None)
    true_names = [dataset.class_names[c] for c in data.labels.tolist()]
    # Label space: the model's classes, plus any true class the model cannot predict.
    names = list(clf.class_names) + sorted(set(true_names) - set(clf.class_names))
    index = {n: i for i, n in enumerate(names)}
    t0 = time.perf_counter()
    preds = list(
        tqdm(
            clf.predict_iter(data.paths, batch_size=batch_size or None, top_k=3),
            total=len(data),
            desc=f"evaluate {split}",
            unit="img",
            disable=not progress,
        )
    )
    seconds = time.perf_counter() - t0
    failed = [p for p in preds if not p.ok]
    if failed:
        for p in failed:
            print(f"marsvision: {p.source}: {p.error}", file=sys.stderr)
        raise DataError(
            f"{len(failed)} of {len(preds)} images of split {split} could not be read (named above); "
            f"an evaluation needs every image of the split"
        )
    y_true = np.array([index[n] for n in true_names])
    y_pred = np.array([index[p.label] for p in preds])
    m = classification_metrics(y_true, y_pred, names)
    cm = full_confusion_matrix(y_true, y_pred, len(names))
    m.update(
        split=split,
        model=clf.meta.get("arch"),
        runtime=clf.runtime,
        precision=clf.meta.get("precision", "fp32"),
        images_per_s=len(data) / seconds,
        most_confused=most_confused_pairs(cm, names, k=15),
        ci95=bootstrap_ci(y_true, y_pred),
    )
    m.update(trust_metrics(clf, preds, y_true))

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / "metrics.json") as f:
        json.dump(m, f, indent=2)
    with atomic_write(out_dir / "predictions.csv", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "true", "label", "confidence", "correct", "unknown", "novelty", "top3"])
        for p, t in zip(preds, true_names, strict=True):
            w.writerow(
                [
                    p.source,
                    t,
                    p.label,
                    f"{p.confidence:.5f}",
                    int(p.label == t),
                    "" if p.unknown is None else int(p.unknown),
                    "" if p.novelty is None else f"{p.novelty:.4f}",
                    ";".join(f"{n}:{c:.4f}" for n, c in p.top_k),
                ]
            )
    try:
        from .report import plot_confusion_matrix, plot_coverage_accuracy, plot_error_gallery, plot_reliability
    except ImportError as e:
        if not (e.name or "").startswith("matplotlib"):
            raise
        print(
            "marsvision: matplotlib is not installed; skipping confusion_matrix.png, error_gallery.png, "
            "reliability.png and coverage_accuracy.png (pip install 'marsvision[plots]')",
            file=sys.stderr,
        )
        return m
    plot_reliability(m["calibration"], out_dir / "reliability.png", title=f"{split} split")
    plot_coverage_accuracy(
        m["coverage_accuracy_curve"], m["selective"], out_dir / "coverage_accuracy.png", title=f"{split} split"
    )

    present = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    plot_confusion_matrix(
        cm[np.ix_(present, present)],
        [names[i] for i in present],
        out_dir / "confusion_matrix.png",
        title=f"{split} split",
    )
    errors = sorted(
        (
            {"path": p.source, "true": t, "pred": p.label, "confidence": p.confidence}
            for p, t in zip(preds, true_names, strict=True)
            if p.label != t
        ),
        key=lambda e: -e["confidence"],
    )
    add_heatmaps(clf, errors[:GALLERY])
    plot_error_gallery(errors, out_dir / "error_gallery.png", max_items=GALLERY)
    return m


GALLERY = 24  # errors shown in the gallery, most confident first


def trust_metrics(clf: Classifier, preds: list, y_true: np.ndarray) -> dict:
    """Calibration (ECE before and after, reliability bins), selective labels (coverage and accuracy at
    confidence ≥ 0.5 / 0.8 / 0.9 / 0.95 and not flagged unknown, and the whole curve), unknown share."""
    from ..inference.trust import softmax

    k = len(clf.class_names)
    known = y_true < k  # a true class the model cannot predict has no probability column
    raw = softmax(np.stack([p.logits for p in preds]))
    probs = np.stack([p.probabilities for p in preds])
    correct = probs.argmax(1) == y_true
    unknown = np.array([bool(p.unknown) for p in preds])
    yk = np.where(known, y_true, 0)
    return {
        "calibration": {
            "calibrated": clf.trust.calibration is not None,
            "bins": 15,
            "ece_before": expected_calibration_error(raw[known], yk[known]),
            "ece_after": expected_calibration_error(probs[known], yk[known]),
            "mean_confidence_before": float(raw.max(1).mean()),
            "mean_confidence_after": float(probs.max(1).mean()),
            "bins_before": calibration_bins(raw[known], yk[known]),
            "bins_after": calibration_bins(probs[known], yk[known]),
        },
        "unknown": {"has_novelty": clf.trust.novelty is not None, "flagged": float(unknown.mean())},
        "selective": selective_accuracy(probs.max(1), correct, ~unknown),
        "coverage_accuracy_curve": coverage_accuracy_curve(probs.max(1), correct, ~unknown),
    }


def add_heatmaps(clf: Classifier, errors: list[dict]) -> None:
    """Give each error the heatmap overlay of its (wrongly) predicted class, as ``image``; models that
    expose no feature maps keep plain thumbnails."""
    from ..inference.explain import explain, overlay

    if clf.head is None or not errors:
        return
    for e, x in zip(errors, explain(clf, [e["path"] for e in errors], top_k=1), strict=True):
        if x.prediction.ok:
            e["image"] = np.asarray(overlay(e["path"], x.heatmaps[x.prediction.label], size=160))


def run_evaluate(cfg: EvaluateConfig, progress: bool = True) -> dict:
    """`marsvision evaluate`: load, evaluate, print the table, write the report folder."""
    from ..inference.predict import limit_cpus, load_model

    dataset = MSLDataset(cfg.data or None)  # fail on a missing data set before loading a model
    out = (
        Path(cfg.out)
        if cfg.out
        else Path("reports") / f"{Path(cfg.model).stem if cfg.model else 'bundled'}-{cfg.split}"
    )
    with limit_cpus(cfg.threads):
        clf = load_model(cfg.model or None, device=cfg.device, threads=cfg.threads or None)
        m = evaluate_split(clf, dataset, cfg.split, out, cfg.batch_size, cfg.limit, progress)
    print(format_table(m))
    c = m["calibration"]
    print(
        f"\ncalibration: ECE {c['ece_before']:.4f} (softmax) → {c['ece_after']:.4f} (calibrated); "
        f"{m['unknown']['flagged']:.1%} flagged unknown"
    )
    print(
        "labels given at confidence ≥ t and not unknown: "
        + "; ".join(
            f"t={s['threshold']:g}: coverage {s['coverage']:.3f}, accuracy "
            + ("–" if s["accuracy"] is None else f"{s['accuracy']:.3f}")
            for s in m["selective"]
        )
    )
    print("\nmost confused (true → predicted):")
    for pair in m["most_confused"][:8]:
        print(f"  {pair['true']} → {pair['pred']}: {pair['count']} ({pair['rate']:.0%} of {pair['true']})")
    print(f"\n{m['images_per_s']:.1f} images/s; report written to {out}/")
    return m
