"""The classes: the active model's, then any that only curators used, with their counts."""

from __future__ import annotations

from fastapi import APIRouter

from ...archive.queries import class_counts
from ..deps import ModelDep, SessionDep
from ..schemas import Classes

router = APIRouter(tags=["classes"])


@router.get("/api/classes", response_model=Classes)
def classes(session: SessionDep, active: ModelDep):
    counts = {c["label"]: c for c in class_counts(session)}
    names = active.classifier.class_names
    empty = {"count": 0, "reviewed": 0, "not_reviewed": 0, "curated": 0}
    return {
        "classes": [{**empty, **counts.get(n, {"label": n}), "model": True} for n in names]
        + [{**c, "model": False} for n, c in counts.items() if n not in names]
    }
