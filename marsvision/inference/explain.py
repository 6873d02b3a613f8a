"""Heatmaps of where the evidence for a class lies: class-activation maps, exact for a linear head over
average-pooled feature maps (every marsvision model), numpy and Pillow only.

The logit of class k is the spatial mean of Σ_c W[k, c] · map_c plus its bias, so each cell of the map
holds its share of the logit. The heatmap shows each cell's share of the class's log-probability, the
class's map minus the probability-weighted mean of all classes' maps (evidence every class shares does
not count), positive part only, scaled to its maximum.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_save
from ..errors import UsageError
from ..preprocess import ImageError, ImageInput, load_image
from .classifier import Classifier, Prediction
from .trust import softmax


@dataclass
class ExplainConfig:
    """Write, per image, a heatmap of where the evidence for its predicted class (and any --classes) lies."""

    output: str = field(metadata={"help": "folder for <image>.<class>.png overlays and explanations.json"})
    classes: str = field(
        default="", metadata={"help": "comma-separated classes to explain too (default: only the predicted one)"}
    )
    model: str = field(default="", metadata={"help": "model file (default: the bundled int8 model)"})
    top_k: int = field(default=3, metadata={"help": "most likely classes listed per image"})
    size: int = field(default=384, metadata={"help": "longer side of the overlay images in pixels"})


# A perceptually ordered dark-to-bright colour scale (the anchors of matplotlib's "inferno").
_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    np.float32,
)
COLOURS = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)], 1
).astype(np.uint8)  # (256, 3)


@dataclass
class Explanation:
    """One image: its prediction and, per explained class, a heatmap (H, W) in [0, 1] on the model grid."""

    prediction: Prediction
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.prediction.to_dict(top_k=len(self.prediction.top_k)), "classes": list(self.heatmaps)}


def class_evidence(clf: Classifier, maps: np.ndarray, probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(N, H, W) each cell's share of log p(class) for image i's class ``classes[i]``, from maps (N, F, H, W)."""
    w = clf.head.weight  # (K, F)
    direction = w[classes] - probs @ w  # ∂ log p_k / ∂ pooled features, per image (N, F)
    return np.einsum("nf,nfhw->nhw", direction, maps)


def explain(
    clf: Classifier, sources: Sequence[ImageInput], classes: Sequence[str] = (), top_k: int = 3, batch_size: int = 16
) -> list[Explanation]:
    """Predict each image and make a heatmap for its predicted class and for each of ``classes``.
    Unreadable images come back with the prediction's ``error`` and no heatmap."""
    if clf.head is None:
        raise UsageError(
            f"{clf.meta.get('arch')}: this model file exposes no feature maps; re-export it "
            "(`marsvision calibrate` converts an older ONNX file)"
        )
    unknown = [c for c in classes if c not in clf.class_names]
    if unknown:
        raise UsageError(f"unknown class {unknown[0]!r}; the model's classes: {', '.join(clf.class_names)}")
    out = []
    for p in clf.predict_iter(sources, batch_size=batch_size, top_k=top_k, maps=True):
        e = Explanation(p)
        if p.ok:
            maps, probs = p.feature_maps[None], softmax(p.logits[None])
            for name in dict.fromkeys([p.label, *classes]):
                heat = np.maximum(class_evidence(clf, maps, probs, np.array([clf.class_names.index(name)]))[0], 0.0)
                e.heatmaps[name] = heat / max(float(heat.max()), 1e-12)
            p.feature_maps = None  # large, and no longer needed
        out.append(e)
    return out


def overlay(source: ImageInput, heat: np.ndarray, size: int = 384, alpha: float = 0.5) -> Image.Image:
    """The image (longer side ``size``) with the heatmap, upsampled and coloured, blended over it."""
    img = load_image(source, size)
    img.thumbnail((size, size), Image.BILINEAR)
    if min(img.size) < size // 2:  # small images are scaled up so the map stays readable
        scale = size / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BILINEAR)
    h = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), "L").resize(img.size, Image.BILINEAR)
    coloured = Image.fromarray(COLOURS[np.asarray(h)], "RGB")
    return Image.blend(img, coloured, alpha)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name).strip("-")


def write_explanations(
    explanations: Sequence[Explanation], sources: Sequence[ImageInput], out_dir: str | os.PathLike, size: int = 384
) -> list[dict]:
    """Write ``<image stem>.<class>.png`` per heatmap into ``out_dir``; returns one row per image (its
    prediction, top-k, the files written, or its error)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, seen = [], set()
    for e, source in zip(explanations, sources, strict=True):
        row = e.to_dict()
        stem = Path(str(e.prediction.source)).stem if isinstance(source, (str, os.PathLike)) else f"image{len(rows)}"
        while stem in seen:  # two inputs with one file name (different folders): keep both
            stem += "_"
        seen.add(stem)
        row["heatmaps"] = {}
        for name, heat in e.heatmaps.items():
            path = out_dir / f"{stem}.{_slug(name)}.png"
            try:
                picture = overlay(source, heat, size)
            except ImageError as err:  # unreadable now, though it was read a moment ago
                row["error"] = str(err)
                break
            atomic_save(lambda tmp, p=picture: p.save(tmp, format="PNG"), path)
            row["heatmaps"][name] = path.name
        rows.append(row)
    return rows
