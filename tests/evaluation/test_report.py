"""Tests for marsvision.report: plots are valid PNGs, written atomically, robust to bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from marsvision.evaluation.report import (
    most_confused_pairs,
    plot_confusion_matrix,
    plot_curves,
    plot_error_gallery,
)

CLASSES_24 = [
    "apxs",
    "apxs cal target",
    "chemcam cal target",
    "chemin inlet open",
    "drill",
    "drill holes",
    "drt front",
    "drt side",
    "ground",
    "horizon",
    "inlet",
    "mahli",
    "mahli cal target",
    "mastcam",
    "mastcam cal target",
    "observation tray",
    "portion box",
    "portion tube",
    "portion tube opening",
    "rems uv sensor",
    "rover rear deck",
    "scoop",
    "sun",
    "turret",
]


def _png(path, min_w: int = 200, min_h: int = 150) -> tuple[int, int]:
    """Assert ``path`` is a readable PNG of at least the given size; return its size."""
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        w, h = im.size
    assert w >= min_w and h >= min_h, (w, h)
    return w, h


def _no_temp_files(folder) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def _random_cm(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cm = rng.integers(0, 4, size=(n, n))
    cm[np.diag_indices(n)] = rng.integers(10, 60, size=n)
    return cm


def test_confusion_matrix_24_classes(tmp_path):
    cm = _random_cm(24)
    cm[5] = 0  # a class with no support must not break normalisation
    out = tmp_path / "sub" / "cm.png"
    plot_confusion_matrix(cm, CLASSES_24, out, title="test split")
    w, h = _png(out, 1000, 1000)
    assert w < 6000 and h < 6000
    _no_temp_files(out.parent)


def test_confusion_matrix_shape_mismatch(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((3, 3)), ["a", "b"], tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_confusion_matrix_overwrites(tmp_path):
    out = tmp_path / "cm.png"
    out.write_bytes(b"old")
    plot_confusion_matrix(np.eye(3, dtype=int) * 5, ["a", "b", "c"], out)
    _png(out, 200, 200)
    _no_temp_files(tmp_path)


def _make_images(folder, n: int) -> list[str]:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 255, size=(60 + i, 90, 3), dtype=np.uint8)
        p = folder / f"img{i}.jpg"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


def test_error_gallery_with_unreadable(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    paths = _make_images(imgs, 5)
    bad = imgs / "broken.jpg"
    bad.write_bytes(b"not an image")
    errors = [
        {"path": p, "true": CLASSES_24[i], "pred": CLASSES_24[-1 - i], "confidence": 0.1 * i}
        for i, p in enumerate(paths)
    ]
    errors.append({"path": str(bad), "true": "drt side", "pred": "ground", "confidence": 0.99})
    errors.append({"path": str(imgs / "missing.png"), "true": "sun", "pred": "horizon", "confidence": 0.5})
    out = tmp_path / "out" / "errors.png"
    plot_error_gallery(errors, out, max_items=24, cols=6)
    _png(out, 600, 300)
    _no_temp_files(out.parent)


def test_error_gallery_truncates_many(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    paths = _make_images(imgs, 3)
    errors = [{"path": paths[i % 3], "true": "a", "pred": "b", "confidence": i / 40} for i in range(40)]
    out = tmp_path / "out" / "errors.png"
    plot_error_gallery(errors, out, max_items=12, cols=4)
    _png(out, 400, 400)
    _no_temp_files(out.parent)


def test_error_gallery_empty(tmp_path):
    out = tmp_path / "errors.png"
    plot_error_gallery([], out)
    _png(out, 200, 100)
    _no_temp_files(tmp_path)


def test_curves_full(tmp_path):
    history = [
        {
            "epoch": e,
            "train_loss": 2.0 / (e + 1),
            "val_loss": 2.2 / (e + 1),
            "val_acc": 0.5 + 0.04 * e,
            "val_macro_f1": 0.4 + 0.04 * e,
            "lr": 1e-3 * 0.7**e,
        }
        for e in range(10)
    ]
    out = tmp_path / "curves.png"
    plot_curves(history, out)
    _png(out, 900, 300)
    _no_temp_files(tmp_path)


def test_curves_missing_keys(tmp_path):
    history = [
        {"epoch": 0, "train_loss": 1.5},
        {"epoch": 1, "train_loss": 1.2, "val_loss": None, "val_acc": float("nan")},
        {"epoch": 2, "train_loss": 1.0, "val_loss": 1.1, "val_acc": 0.6},
        {"train_loss": 0.9},  # no epoch at all
    ]
    out = tmp_path / "curves.png"
    plot_curves(history, out)
    _png(out, 900, 300)
    plot_curves([], tmp_path / "empty.png")
    _png(tmp_path / "empty.png", 900, 300)
    _no_temp_files(tmp_path)


def test_most_confused_pairs_exact():
    names = ["c", "a", "b"]
    cm = np.array(
        [
            [5, 3, 2],  # c: total 10
            [1, 8, 3],  # a: total 12
            [0, 2, 9],  # b: total 11
        ]
    )
    got = most_confused_pairs(cm, names, k=10)
    expected = [
        {"true": "a", "pred": "b", "count": 3, "rate": 3 / 12},
        {"true": "c", "pred": "a", "count": 3, "rate": 3 / 10},
        {"true": "b", "pred": "a", "count": 2, "rate": 2 / 11},
        {"true": "c", "pred": "b", "count": 2, "rate": 2 / 10},
        {"true": "a", "pred": "c", "count": 1, "rate": 1 / 12},
    ]
    assert [{k: v for k, v in p.items() if k != "rate"} for p in got] == [
        {k: v for k, v in p.items() if k != "rate"} for p in expected
    ]
    for g, e in zip(got, expected, strict=True):
        assert math.isclose(g["rate"], e["rate"])
        assert isinstance(g["count"], int)
    assert most_confused_pairs(cm, names, k=2) == got[:2]


def test_most_confused_pairs_none():
    assert most_confused_pairs(np.diag([3, 4, 0]), ["x", "y", "z"]) == []
