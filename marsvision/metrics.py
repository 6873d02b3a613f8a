"""Classification metrics from a confusion matrix, in numpy (no scikit-learn needed at run time).

Semantics follow scikit-learn (``zero_division=0``): macro and weighted averages run over the
union of the true and the predicted labels; a class's F1 is 2·TP / (2·TP + FP + FN).
A test compares every number against scikit-learn when it is installed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_counts(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int]) -> np.ndarray:
    """(L, L) counts, rows = true, over ``labels`` (pairs with a label outside ``labels`` are ignored)."""
    y_true, y_pred, labels = np.asarray(y_true), np.asarray(y_pred), np.asarray(labels)
    pos = {int(c): i for i, c in enumerate(labels.tolist())}
    t = np.array([pos.get(int(c), -1) for c in y_true.tolist()], dtype=np.int64)
    p = np.array([pos.get(int(c), -1) for c in y_pred.tolist()], dtype=np.int64)
    keep = (t >= 0) & (p >= 0)
    n = len(labels)
    return np.bincount(t[keep] * n + p[keep], minlength=n * n).reshape(n, n)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> dict:
    """Accuracy, macro/weighted F1 and a per-class table; labels are indices into ``class_names``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    labels = np.union1d(y_true, y_pred).astype(np.int64)
    cm = confusion_counts(y_true, y_pred, labels)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)  # = 2TP / (2TP + FP + FN)
    n = int(len(y_true))
    return {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()) if len(labels) else 0.0,
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "per_class": [
            {"class": class_names[c], "precision": float(pi), "recall": float(ri), "f1": float(fi), "support": int(si)}
            for c, pi, ri, fi, si in zip(labels.tolist(), precision, recall, f1, support, strict=True)
        ],
    }


def bootstrap_ci(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    baseline: Sequence[int] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Percentile-bootstrap intervals for accuracy and macro-F1 (images resampled with replacement).

    With ``baseline`` (another model's predictions for the same images), also the interval of the
    paired difference ``y_pred - baseline``: both are scored on the same resamples, so the images'
    shared difficulty cancels out. Macro-F1 keeps scikit-learn's union-of-labels semantics per resample.
    """
    y_true = np.asarray(y_true, np.int64)
    runs = {"model": np.asarray(y_pred, np.int64)}
    if baseline is not None:
        runs["baseline"] = np.asarray(baseline, np.int64)
    n = len(y_true)
    if n == 0 or any(len(v) != n for v in runs.values()):
        raise ValueError("bootstrap_ci needs equally long, non-empty label arrays")
    k = int(max(y_true.max(), *(v.max() for v in runs.values()))) + 1
    rng = np.random.default_rng(seed)
    scores = {name: {"accuracy": np.empty(n_boot), "macro_f1": np.empty(n_boot)} for name in runs}
    step = max(1, 2_000_000 // n)  # resamples per chunk: memory stays ~100 MB for any split size
    for lo in range(0, n_boot, step):
        b = min(step, n_boot - lo)
        idx = rng.integers(0, n, size=(b, n), dtype=np.int32)  # (b, N) resampled image indices
        t = y_true[idx]
        offset = (np.arange(b) * k)[:, None]  # one bincount for all resamples: class c of resample j → j*k + c
        support = np.bincount((offset + t).ravel(), minlength=b * k).reshape(b, k)
        for name, y in runs.items():
            p = y[idx]
            hit = t == p
            tp = np.bincount((offset + t)[hit], minlength=b * k).reshape(b, k)
            predicted = np.bincount((offset + p).ravel(), minlength=b * k).reshape(b, k)
            present = (support + predicted) > 0  # (b, K) union of true and predicted labels
            f1 = 2 * tp / np.maximum(support + predicted, 1)
            scores[name]["accuracy"][lo : lo + b] = hit.mean(1)
            scores[name]["macro_f1"][lo : lo + b] = f1.sum(1) / present.sum(1)
    q = [50 * (1 - level), 50 * (1 + level)]

    def interval(x: np.ndarray) -> list[float]:
        return [float(v) for v in np.percentile(x, q)]

    out = {"level": level, "n_boot": n_boot, **{m: interval(v) for m, v in scores["model"].items()}}
    if baseline is not None:
        out.update({f"{m}_diff": interval(scores["model"][m] - scores["baseline"][m]) for m in scores["model"]})
    return out


def paired_scores(
    y_true: Sequence[int], y_pred: Sequence[int], baseline: Sequence[int], class_names: Sequence[str]
) -> dict:
    """Accuracy and macro-F1 of ``y_pred``, and the paired 95 % bootstrap intervals of their differences
    to ``baseline``, another model's predictions for the same images."""
    m = classification_metrics(y_true, y_pred, class_names)
    ci = bootstrap_ci(y_true, y_pred, baseline=baseline)
    return {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "accuracy_diff": ci["accuracy_diff"],
        "macro_f1_diff": ci["macro_f1_diff"],
    }


def full_confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(C, C) counts over every class of the model, rows = true."""
    return confusion_counts(y_true, y_pred, np.arange(num_classes))


def most_confused_pairs(cm: np.ndarray, class_names: list[str], k: int = 10) -> list[dict]:
    """Top-``k`` non-zero off-diagonal cells by count (ties by true then predicted name)."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape != (len(class_names), len(class_names)):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(class_names)} class names")
    totals = cm.sum(axis=1)
    pairs = [
        {
            "true": class_names[i],
            "pred": class_names[j],
            "count": int(cm[i, j]),
            "rate": int(cm[i, j]) / float(totals[i]),
        }
        for i, j in zip(*np.nonzero(cm), strict=True)
        if i != j
    ]
    pairs.sort(key=lambda p: (-p["count"], p["true"], p["pred"]))
    return pairs[: max(0, k)]


def format_table(metrics: dict) -> str:
    """Plain-text summary + per-class table for the terminal."""
    w = max([len(r["class"]) for r in metrics["per_class"]] + [5])
    lines = [
        f"images {metrics['n']}   accuracy {metrics['accuracy']:.4f}   "
        f"macro-F1 {metrics['macro_f1']:.4f}   weighted-F1 {metrics['weighted_f1']:.4f}",
    ]
    if "ci95" in metrics:
        ci = metrics["ci95"]
        lines.append(
            f"95% bootstrap interval: accuracy {ci['accuracy'][0]:.4f}–{ci['accuracy'][1]:.4f}   "
            f"macro-F1 {ci['macro_f1'][0]:.4f}–{ci['macro_f1'][1]:.4f}"
        )
    lines += [
        "",
        f"{'class':<{w}}  precision  recall     f1  support",
    ]
    for r in metrics["per_class"]:
        lines.append(f"{r['class']:<{w}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['support']:7d}")
    return "\n".join(lines)


def calibration_bins(probs: np.ndarray, y_true: Sequence[int], bins: int = 15) -> list[dict]:
    """Equal-width bins of the top-1 confidence: for each, its range, image count, mean confidence and
    accuracy (a reliability diagram's data). ``probs`` (N, K), ``y_true`` indices into K."""
    probs, y_true = np.asarray(probs), np.asarray(y_true)
    conf, hit = probs.max(1), probs.argmax(1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)  # (lo, hi] bins
    out = []
    for b in range(bins):
        s = which == b
        out.append(
            {
                "lo": float(edges[b]),
                "hi": float(edges[b + 1]),
                "n": int(s.sum()),
                "confidence": float(conf[s].mean()) if s.any() else None,
                "accuracy": float(hit[s].mean()) if s.any() else None,
            }
        )
    return out


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], bins: int = 15) -> float:
    """ECE: the image-weighted mean |accuracy − confidence| over equal-width confidence bins."""
    rows = calibration_bins(probs, y_true, bins)
    n = sum(r["n"] for r in rows)
    return float(sum(r["n"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["n"]) / max(n, 1))


def selective_accuracy(
    confidence: np.ndarray,
    correct: np.ndarray,
    keep: np.ndarray | None = None,
    thresholds: Sequence[float] = (0.5, 0.8, 0.9, 0.95),
) -> list[dict]:
    """Coverage (share of images labelled) and accuracy among them when a label is given only at
    confidence ≥ each threshold (and where ``keep``, e.g. not flagged unknown)."""
    confidence, correct = np.asarray(confidence), np.asarray(correct, bool)
    keep = np.ones(len(confidence), bool) if keep is None else np.asarray(keep, bool)
    out = []
    for t in thresholds:
        s = keep & (confidence >= t)
        out.append(
            {
                "threshold": float(t),
                "coverage": float(s.mean()) if len(s) else 0.0,
                "accuracy": float(correct[s].mean()) if s.any() else None,
            }
        )
    return out


def coverage_accuracy_curve(
    confidence: np.ndarray, correct: np.ndarray, keep: np.ndarray | None = None, points: int = 101
) -> list[tuple[float, float]]:
    """(coverage, accuracy) when the most confident images are labelled first, at ``points`` coverages;
    images outside ``keep`` are never labelled, so the curve ends at their share."""
    confidence, correct = np.asarray(confidence), np.asarray(correct, bool)
    keep = np.ones(len(confidence), bool) if keep is None else np.asarray(keep, bool)
    order = np.argsort(-np.where(keep, confidence, -np.inf), kind="stable")[: int(keep.sum())]
    hits = np.cumsum(correct[order])
    n = len(confidence)
    out = []
    for cov in np.linspace(0, keep.mean(), points)[1:]:
        m = max(1, int(round(cov * n)))
        out.append((m / n, float(hits[m - 1] / m)))
    return out
