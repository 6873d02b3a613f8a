"""Classification metrics with scikit-learn semantics (macro = mean over the union of true and
predicted labels)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int],
                           class_names: Sequence[str]) -> dict:
    """Accuracy, macro/weighted F1 and a per-class table; labels are indices into ``class_names``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.union1d(y_true, y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "per_class": [
            {"class": class_names[c], "precision": float(pi), "recall": float(ri), "f1": float(fi),
             "support": int(si)}
            for c, pi, ri, fi, si in zip(labels, p, r, f, s)
        ],
    }


def full_confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(C, C) counts over every class of the model, rows = true."""
    return confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def format_table(metrics: dict) -> str:
    """Plain-text summary + per-class table for the terminal."""
    w = max([len(r["class"]) for r in metrics["per_class"]] + [5])
    lines = [
        f"images {metrics['n']}   accuracy {metrics['accuracy']:.4f}   "
        f"macro-F1 {metrics['macro_f1']:.4f}   weighted-F1 {metrics['weighted_f1']:.4f}",
        "",
        f"{'class':<{w}}  precision  recall     f1  support",
    ]
    for r in metrics["per_class"]:
        lines.append(f"{r['class']:<{w}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}  {r['support']:7d}")
    return "\n".join(lines)
