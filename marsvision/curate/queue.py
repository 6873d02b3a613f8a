"""The review queue over the archive: the not yet reviewed images a curator should label next.

The strategies (``marsvision.curate.strategies``) run on the images of smallest top-2 margin (an indexed
column), a pool of at most ``POOL`` rows whose probabilities are recomputed from their stored features
by the active model, so a request costs the same at 10 000 or 1 000 000 images.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..archive.db import Image, ImageVectors
from ..archive.queries import get_images
from ..archive.records import from_blob
from ..inference.classifier import Classifier
from .strategies import choose

POOL = 2000


def review_queue(session: Session, clf: Classifier, strategy: str, limit: int, seed: int = 0) -> list[dict]:
    open_rows = (
        select(Image.id, ImageVectors.features, ImageVectors.texture)
        .join(ImageVectors, ImageVectors.image_id == Image.id)
        .where(Image.reviewed_label.is_(None))
    )
    order = func.random() if strategy == "random" else Image.margin.asc()
    rows = session.execute(open_rows.order_by(order, Image.id).limit(POOL)).all()
    if not rows:
        return []
    feats = np.stack([from_blob(r.features, "f2") for r in rows])
    tex = np.stack([from_blob(r.texture, "f4") for r in rows]) if all(r.texture for r in rows) else None
    probs, _ = clf.trust.apply_embedded(clf.head(feats), tex)
    picked = choose(strategy, probs, feats, limit, np.random.default_rng(seed))
    top2 = np.sort(probs[picked], axis=1)[:, -2:]
    out = get_images(session, [rows[i].id for i in picked])
    for item, (second, first) in zip(out, top2, strict=True):
        item["review_margin"] = round(float(first - second), 6)
    return out
