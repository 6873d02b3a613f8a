"""Re-score the archive with another model version from the stored vectors: no image is decoded.

A version can re-score the rows whose features its graph computes (a refit shares its parent's graph:
``models.info["features_from"]``); rows indexed by an unrelated model need ``marsvision index
--reclassify``. Rows are rewritten in chunks, one transaction each; a kill leaves every row labelled by
one version or the other, never half, and rerunning the activation finishes the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..inference.classifier import Classifier
from ..inference.predict import load_model
from .db import Image, ImageVectors, ModelVersion
from .locks import archive_lock
from .records import from_blob
from .versions import VersionError, set_active


@dataclass
class Activation:
    """What ``activate`` did: the version now active and the rows it re-scored."""

    version: str
    rescored: int
    seconds: float


def scores(clf: Classifier, features: np.ndarray, texture: np.ndarray | None, top_k: int = 5) -> list[dict]:
    """The model-output columns for stored features (N, F) and texture embeddings (N, D + 1)."""
    probs, novelty = clf.trust.apply_embedded(clf.head(features), texture)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    out = []
    for i, row in enumerate(order):
        p = probs[i]
        out.append(
            {
                "label": clf.class_names[row[0]],
                "confidence": float(p[row[0]]),
                "margin": float(p[row[0]] - (p[row[1]] if len(row) > 1 else 0.0)),
                "unknown": None if novelty is None else bool(novelty[i] > 1.0),
                "novelty": None if novelty is None else float(novelty[i]),
                "top_k": [[clf.class_names[j], round(float(p[j]), 6)] for j in row],
            }
        )
    return out


def compatible(session: Session, mv: ModelVersion) -> int:
    """How many rows were labelled by a version whose features ``mv`` cannot read (0: all fine)."""
    source = mv.info.get("features_from") or mv.version
    other = [
        m.id for m in session.scalars(select(ModelVersion)) if (m.info.get("features_from") or m.version) != source
    ]
    if not other:
        return 0
    return session.scalar(
        select(func.count(Image.id))
        .join(ImageVectors, ImageVectors.image_id == Image.id)
        .where(Image.model_id.in_(other))
    )


def rescore_rows(session: Session, clf: Classifier, model_id: int, rows) -> None:
    """Rewrite the model-output columns of ``rows`` (image_id as ``id``, features, texture) with ``clf``."""
    feats = np.stack([from_blob(r.features, "f2") for r in rows])
    tex = np.stack([from_blob(r.texture, "f4") for r in rows]) if all(r.texture for r in rows) else None
    cols = scores(clf, feats, tex)
    session.execute(update(Image), [{"id": r.id, "model_id": model_id, **c} for r, c in zip(rows, cols, strict=True)])


def vector_rows(session: Session, after: int = 0, limit: int | None = None, ids: list[int] | None = None):
    q = select(ImageVectors.image_id.label("id"), ImageVectors.features, ImageVectors.texture)
    q = q.where(ImageVectors.image_id > after).order_by(ImageVectors.image_id)
    if ids is not None:
        q = q.where(ImageVectors.image_id.in_(ids))
    return session.execute(q.limit(limit)).all()


def activate(
    make: sessionmaker,
    version: ModelVersion,
    chunk: int = 2000,
    progress=None,
    classifier: Callable[[], Classifier] | None = None,
) -> Activation:
    """Make ``version`` the active one and re-score every readable row with it; returns counts and time.
    Under the archive's lock (locks.py): activations and index batches take turns, so when it returns every
    row carries the active version, and a rerun after a kill finishes the job. ``classifier``: the version's
    classifier, loaded by the caller and kept (the server's active model: one copy in memory, not two);
    default: loaded here and closed after."""
    with archive_lock(make.kw["bind"]):
        return _activate(make, version, chunk, progress, classifier)


def _activate(make: sessionmaker, version: ModelVersion, chunk: int, progress, classifier) -> Activation:
    t0 = time.perf_counter()
    with make.begin() as s:
        mv = s.get(ModelVersion, version.id)
        blocked = compatible(s, mv)
        if blocked:
            raise VersionError(
                f"{blocked} images were indexed by a model whose features {mv.version} cannot read; "
                f"activate it with `marsvision index PATH --reclassify` instead"
            )
        set_active(s, mv)
        path = mv.path
    clf = classifier() if classifier is not None else load_model(path, threads=None)
    done, last = 0, 0
    try:
        while True:
            with make.begin() as s:  # one transaction a chunk
                rows = vector_rows(s, last, chunk)
                if not rows:
                    break
                rescore_rows(s, clf, version.id, rows)
            done += len(rows)
            last = rows[-1].id
            if progress:
                progress(done)
    finally:
        if classifier is None:
            clf.close()
    return Activation(version.version, done, round(time.perf_counter() - t0, 2))
