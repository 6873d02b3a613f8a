"""Classify uploaded images, and with ``store=true`` add them to the archive (a write)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Request, UploadFile
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from ...archive.db import Image
from ...archive.index import insert_new
from ...archive.records import image_row
from ...atomic import atomic_write
from ...errors import ImageError
from ..deps import StateDep, require_writer
from ..errors import image_http_error
from ..schemas import ClassifyResult
from ..state import ActiveModel, ArchiveState

router = APIRouter(tags=["classify"])


@router.post("/api/classify", response_model=ClassifyResult)
async def classify(
    files: Annotated[list[UploadFile], File(description="one or more images")],
    request: Request,
    state: StateDep,
    store: bool = False,
):
    """Classify uploaded images; ``store=true`` also adds them to the archive (a write). A classification
    holds a slot from before its upload is read (slots.py)."""
    settings = state.settings
    if store:
        require_writer(request, settings)
    cap = settings.max_upload_bytes
    payloads = []
    for f in files:
        data = await f.read(cap + 1)
        if len(data) > cap:
            raise HTTPException(413, f"{f.filename}: larger than {cap / 2**20:g} MB")
        payloads.append((f.filename or "upload", data))
    active = await run_in_threadpool(state.model)
    clf = active.classifier
    preds = await run_in_threadpool(clf.predict, [d for _, d in payloads], None, 3)
    if not any(p.ok for p in preds):
        # Nothing to classify: the first refusal, with the status of its kind. A prediction carries only
        # its message, so that upload is decoded again for its ImageError (a quick failure, not a model run).
        name, data = payloads[0]
        try:
            await run_in_threadpool(clf.decode, data)
        except ImageError as e:
            raise image_http_error(e, name) from None
        raise HTTPException(422, f"{name}: {preds[0].error}")
    results = [
        {
            "filename": name,
            "label": p.label,
            "confidence": p.confidence,
            "unknown": p.unknown,
            "novelty": p.novelty,
            "top_k": p.top_k,
            "error": p.error,
            "model_version": active.version.version,
        }
        for (name, _), p in zip(payloads, preds, strict=True)
    ]
    if store:
        await run_in_threadpool(store_uploads, state, active, payloads, preds, results)
        state.changed()
    return {"items": results}


def store_uploads(state: ArchiveState, active: ActiveModel, payloads, preds, results) -> None:
    """Write each readable upload into the uploads folder (once per content) and add its row; its id goes
    into its result."""
    folder = state.settings.uploads
    folder.mkdir(parents=True, exist_ok=True)
    with state.sessions.begin() as s:
        for (name, data), p, r in zip(payloads, preds, results, strict=True):
            if not p.ok:
                continue
            sha = hashlib.sha256(data).hexdigest()
            path = folder / f"{sha[:16]}_{Path(name).name}"
            if not path.exists():  # atomically: a crash never leaves half an upload the row points to
                with atomic_write(path, "wb") as f:
                    f.write(data)
            insert_new(s, [image_row(path, sha, len(data), p, active.classifier, active.version.id)])
            r["id"] = s.scalar(select(Image.id).where(Image.sha256 == sha))
