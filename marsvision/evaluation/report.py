"""Plots for evaluation and training reports (confusion matrix, error gallery, curves).

All figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no global
backend state) and written atomically via :func:`marsvision.atomic.atomic_save`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from ..atomic import atomic_save
from ..metrics import most_confused_pairs  # re-exported: numpy-only, so evaluate needs no matplotlib

PathLike = str | os.PathLike

__all__ = [
    "plot_confusion_matrix",
    "plot_error_gallery",
    "plot_curves",
    "plot_reliability",
    "plot_coverage_accuracy",
    "most_confused_pairs",
]


def _save(fig: Figure, path: PathLike, dpi: int = 110) -> None:
    """Write ``fig`` to ``path`` as PNG atomically."""
    atomic_save(
        lambda tmp: fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight", pad_inches=0.15),
        path,
    )


def _row_normalise(cm: np.ndarray) -> np.ndarray:
    """Divide each row by its sum; rows with zero support stay all-zero."""
    cm = np.asarray(cm, dtype=float)
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def _check_square(cm: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Return ``cm`` as an array after checking it is n x n with n == len(class_names)."""
    cm = np.asarray(cm)
    n = len(class_names)
    if cm.ndim != 2 or cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} class names")
    return cm


def plot_confusion_matrix(cm: np.ndarray, class_names: list[str], path: PathLike, title: str = "") -> None:
    """Plot the row-normalised confusion matrix (rows = true, cols = predicted) to a PNG."""
    cm = _check_square(cm, class_names)
    n = len(class_names)
    norm = _row_normalise(cm)
    longest = max((len(str(c)) for c in class_names), default=1)
    # Cells of ~0.5 in plus room for the labels on the left and bottom.
    cell = 0.5
    label_in = 0.075 * (longest + 8) + 0.5  # y labels carry " (n=123)"
    side = max(4.0, cell * n)
    fig = Figure(figsize=(side + label_in + 1.5, side + label_in * 0.75 + 0.8))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cbar.ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    cbar.set_label("% of true class")
    ticks = np.arange(n)
    fs = 9 if n <= 30 else 7
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(class_names, rotation=50, ha="right", rotation_mode="anchor", fontsize=fs)
    support = cm.sum(axis=1)
    ax.set_yticklabels([f"{c} (n={int(s)})" for c, s in zip(class_names, support, strict=True)], fontsize=fs)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    # Thin grid between cells for easier reading of rows/columns.
    ax.set_xticks(ticks - 0.5, minor=True)
    ax.set_yticks(ticks - 0.5, minor=True)
    ax.grid(which="minor", color="0.85", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    cell_fs = 7 if n > 15 else 9
    for i in range(n):
        for j in range(n):
            v = norm[i, j]
            if v >= 0.01:
                ax.text(
                    j,
                    i,
                    f"{100 * v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=cell_fs,
                    color="white" if v > 0.5 else "black",
                )
    total = int(cm.sum())
    acc = float(np.trace(cm)) / total if total else float("nan")
    head = title or "Confusion matrix"
    ax.set_title(f"{head}\n(row-normalised, % of true class; n={total}, acc={acc:.1%})")
    fig.tight_layout()
    _save(fig, path)


def _thumbnail(path: Any, size: int = 160) -> np.ndarray | None:
    """Load ``path`` as an RGB thumbnail array, or ``None`` if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            return np.asarray(img)
    except Exception:  # unreadable, missing, truncated, not an image...
        return None


def plot_error_gallery(errors: list[dict], path: PathLike, max_items: int = 24, cols: int = 6) -> None:
    """Grid of misclassified images, most confident mistakes first."""
    items = sorted(errors, key=lambda e: -float(e.get("confidence") or 0.0))[: max(0, max_items)]
    if not items:
        fig = Figure(figsize=(4, 2))
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no errors", ha="center", va="center", fontsize=16)
        ax.axis("off")
        _save(fig, path)
        return
    cols = max(1, min(cols, len(items)))
    rows = math.ceil(len(items) / cols)
    fig = Figure(figsize=(2.3 * cols, 2.6 * rows))
    for k, err in enumerate(items):
        ax = fig.add_subplot(rows, cols, k + 1)
        thumb = err["image"] if err.get("image") is not None else _thumbnail(err.get("path"))
        if thumb is None:
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center", color="0.4", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.imshow(thumb)
            ax.axis("off")
        conf = err.get("confidence")
        conf_s = f" ({float(conf):.2f})" if conf is not None else ""
        ax.set_title(
            f"true: {err.get('true', '?')}\npred: {err.get('pred', '?')}{conf_s}",
            color="red",
            fontsize=8,
        )
    heat = " (heatmap: evidence for the predicted class)" if any(e.get("image") is not None for e in items) else ""
    fig.suptitle(f"Most confident errors (top {len(items)} of {len(errors)}){heat}")
    fig.tight_layout()
    _save(fig, path)


def _series(history: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) for ``key``, skipping rows where it is missing, None or NaN."""
    xs: list[float] = []
    ys: list[float] = []
    for i, row in enumerate(history):
        v = row.get(key)
        if v is None:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if math.isnan(v):
            continue
        ep = row.get("epoch")
        xs.append(float(ep) if isinstance(ep, (int, float)) and not math.isnan(ep) else float(i))
        ys.append(v)
    return xs, ys


def plot_curves(history: list[dict], path: PathLike) -> None:
    """Three panels: train/val loss, val accuracy + macro-F1, learning rate."""
    fig = Figure(figsize=(15, 4.2))
    panels = [
        ("loss", [("train_loss", "train loss"), ("val_loss", "val loss")]),
        ("validation metrics", [("val_acc", "val accuracy"), ("val_macro_f1", "val macro-F1")]),
        ("learning rate", [("lr", "lr")]),
    ]
    for idx, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, 3, idx + 1)
        drawn = 0
        for key, label in keys:
            xs, ys = _series(history, key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
                drawn += 1
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
            if title == "learning rate":
                _, lr = _series(history, "lr")
                if min(lr) > 0 and max(lr) / min(lr) > 20:
                    ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", color="0.5", transform=ax.transAxes)
    fig.tight_layout()
    _save(fig, path)


def plot_reliability(calibration: dict, path: PathLike, title: str = "") -> None:
    """Reliability diagrams before and after calibration: accuracy per confidence bin against the
    diagonal, bar width ∝ nothing (equal bins), with each bin's image count."""
    fig = Figure(figsize=(10, 4.4))
    for i, (key, name) in enumerate((("before", "softmax"), ("after", "calibrated"))):
        ax = fig.add_subplot(1, 2, i + 1)
        bins = [b for b in calibration[f"bins_{key}"] if b["n"]]
        width = bins[0]["hi"] - bins[0]["lo"] if bins else 0.1
        ax.bar(
            [(b["lo"] + b["hi"]) / 2 for b in bins],
            [b["accuracy"] for b in bins],
            width=width * 0.9,
            color="#4c72b0",
            label="accuracy in bin",
        )
        ax.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            "o",
            ms=3,
            color="#dd8452",
            label="at the bin's mean confidence",
        )
        ax.plot([0, 1], [0, 1], "--", color="0.5", label="calibrated")
        for b in bins:
            ax.text((b["lo"] + b["hi"]) / 2, 0.02, str(b["n"]), ha="center", fontsize=6, rotation=90, color="white")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title + ', ' if title else ''}{name}: ECE {calibration[f'ece_{key}']:.3f}")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, path)


def plot_coverage_accuracy(
    curve: Sequence[Sequence[float]], selective: Sequence[dict], path: PathLike, title: str = ""
) -> None:
    """Accuracy of the labels given against the share of images labelled, most confident first (images
    flagged unknown never labelled), with the confidence thresholds marked."""
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.add_subplot()
    if curve:
        ax.plot([c for c, _ in curve], [a for _, a in curve], color="#4c72b0")
    for s in selective:
        if s["accuracy"] is not None:
            ax.plot(s["coverage"], s["accuracy"], "o", color="#dd8452")
            ax.annotate(
                f"≥ {s['threshold']:g}",
                (s["coverage"], s["accuracy"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=8,
            )
    ax.set_xlim(0, 1)
    ax.set_xlabel("coverage (share of images labelled)")
    ax.set_ylabel("accuracy of the labels given")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{title + ': ' if title else ''}selective labels")
    fig.tight_layout()
    _save(fig, path)
