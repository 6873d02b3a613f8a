"""A curator's label for an image (a write)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from ...archive.db import Correction, utcnow
from ..deps import ImageId, ModelDep, StateDep, WriterDep, image_or_404
from ..schemas import ImageDetail, LabelIn
from .images import image_detail

router = APIRouter(tags=["curation"])


@router.put("/api/images/{image_id}/label", response_model=ImageDetail)
def correct(image_id: ImageId, body: LabelIn, who: WriterDep, state: StateDep, active: ModelDep):
    """A curator's label, stored beside the model's (which is never overwritten), with time and author."""
    names = active.classifier.class_names
    if body.label not in names:
        raise HTTPException(422, f"unknown class {body.label!r}; the model's classes: {', '.join(names)}")
    with state.sessions.begin() as s:
        img = image_or_404(s, image_id)
        now = utcnow()
        s.add(
            Correction(
                image_id=img.id,
                label=body.label,
                note=body.note,
                author=body.author or who,
                created_at=now,
                model_id=img.model_id,
                model_label=img.label,
            )
        )
        img.reviewed_label, img.reviewed_at = body.label, now
    state.changed()
    with state.sessions() as s:
        return image_detail(s, image_id)
