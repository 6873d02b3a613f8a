"""One image as a database row: the prediction, the stored vectors, the file-name fields or a PDS product's
label fields, the camera. Shared by the local indexer and the distributed engine, so both write the same
rows for the same image."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

import numpy as np

from .. import cameras
from ..inference.classifier import Classifier, Prediction
from .filenames import parse_filename

SKETCH_DIMS = 64
VECTORS = ("features", "texture", "sketch")  # the keys of a row that go to the image_vectors table
_SKETCH_SEED = 20261130  # fixed: every archive compares sketches made with the same projection


def to_blob(a: np.ndarray, dtype: str) -> bytes:
    return np.ascontiguousarray(a, dtype=f"<{dtype}").tobytes()


def from_blob(b: bytes, dtype: str) -> np.ndarray:
    return np.frombuffer(b, dtype=f"<{dtype}").astype(np.float32)


@functools.lru_cache(maxsize=4)
def _projection(dims: int) -> np.ndarray:
    return np.random.default_rng(_SKETCH_SEED).standard_normal((dims, SKETCH_DIMS)).astype(np.float32)


def sketch(features: np.ndarray) -> np.ndarray:
    """(N, F) features → (N, 64) unit vectors whose dot products approximate the features' cosine
    similarity (a fixed random projection, Johnson–Lindenstrauss): similarity search reads these."""
    f = np.atleast_2d(features).astype(np.float32)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    s = np.einsum("nf,fd->nd", f, _projection(f.shape[1]))  # einsum: no BLAS threads (inference/trust.py)
    return s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)


def texture_embedding(clf: Classifier, texture: np.ndarray) -> np.ndarray | None:
    """(N, C) texture → (N, D + 1) coordinates in the model's novelty basis plus the residual norm: what a
    refit needs to add an image to the novelty references (None when the model has no novelty data)."""
    if clf.trust.novelty is None or texture is None:
        return None
    coords, residual = clf.trust.novelty.embed(np.atleast_2d(texture))
    return np.concatenate([coords, residual[:, None]], axis=1)


def prediction_columns(p: Prediction, clf: Classifier, model_id: int) -> dict:
    """The model-output columns of an image row (what a re-score rewrites)."""
    if not p.ok:
        return {
            "error": p.error,
            "model_id": model_id,
            "label": None,
            "confidence": None,
            "unknown": None,
            "novelty": None,
            "margin": None,
            "top_k": [],
        }
    probs = np.sort(p.probabilities)[::-1]
    return {
        "error": None,
        "model_id": model_id,
        "label": p.label,
        "confidence": float(p.confidence),
        "unknown": p.unknown,
        "novelty": p.novelty,
        "margin": float(probs[0] - (probs[1] if len(probs) > 1 else 0.0)),
        "top_k": [[n, round(float(c), 6)] for n, c in p.top_k],
    }


def _utc(text: str | None) -> dt.datetime | None:
    """A label's time (ISO 8601, UTC with or without a Z) → an aware datetime, None when it is not one."""
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text.strip().rstrip("Zz"))
    except ValueError:
        return None
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def description_columns(path: str | Path, p: Prediction) -> dict:
    """Where the image is from: the sol and camera of a PDS product's label, else of the MSL file name
    (as before PDS products: ``name_fields`` keeps the file name's fields), and the label's other fields."""
    fields = parse_filename(path)
    label = p.product or {}
    instrument = cameras.instrument_code(label.get("instrument")) or cameras.from_filename(path)
    return {
        "sol": label["sol"] if label.get("sol") is not None else fields.get("sol"),
        "instrument": instrument,
        "name_fields": fields,
        "off_camera": cameras.off_camera(instrument),
        "product_id": label.get("product_id"),
        "instrument_id": label.get("instrument"),
        "start_time": _utc(label.get("start_time")),
        "local_mean_solar_time": label.get("local_mean_solar_time"),
        "sequence_id": label.get("sequence_id"),
        "filter_name": label.get("filter"),
        "target": label.get("target"),
        **{k: label.get(k) for k in ("lines", "samples", "bands", "site", "drive")},
    }


def image_rows(items: list[tuple[str | Path, str, int, Prediction]], clf: Classifier, model_id: int) -> list[dict]:
    """Every column of new images, their vectors included (``index.insert_new`` splits them off), from
    (path, sha256, size, prediction) tuples. The vectors of a batch are computed together (a row's
    values do not depend on the batch: ``tests/archive/test_records.py``)."""
    rows = []
    for path, sha256, size, p in items:
        rows.append(
            {
                "sha256": sha256,
                "path": str(path),
                "size_bytes": size,
                **description_columns(path, p),
                **prediction_columns(p, clf, model_id),
                "features": None,
                "texture": None,
                "sketch": None,
            }
        )
    have = [i for i, (*_, p) in enumerate(items) if p.ok and p.features is not None]
    if have:
        feats = np.stack([items[i][3].features for i in have])
        sketches = sketch(feats)
        textures = [items[i][3].texture for i in have]
        emb = None if any(t is None for t in textures) else texture_embedding(clf, np.stack(textures))
        for n, i in enumerate(have):
            rows[i].update(
                features=to_blob(feats[n], "f2"),
                sketch=to_blob(sketches[n], "f2"),
                texture=None if emb is None else to_blob(emb[n], "f4"),
            )
    return rows


def image_row(path: str | Path, sha256: str, size: int, p: Prediction, clf: Classifier, model_id: int) -> dict:
    """``image_rows`` of one image."""
    return image_rows([(path, sha256, size, p)], clf, model_id)[0]
