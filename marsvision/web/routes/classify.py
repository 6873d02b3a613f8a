"""Classify uploaded images, and with ``store=true`` add them to the archive (a write)."""

from __future__ import annotations

import hashlib
import io
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Request, UploadFile
from PIL import Image as PILImage
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
        name = upload_name(f.filename)
        data = await f.read(cap + 1)
        if len(data) > cap:
            raise HTTPException(413, f"{name}: larger than {cap / 2**20:g} MB")
        payloads.append((name, data))
    pixels = sum(map(header_pixels, (d for _, d in payloads)))
    if pixels > settings.max_pixels:  # from the headers, before a pixel is decoded
        raise HTTPException(
            413, f"{pixels / 1e6:.1f} million pixels in this request; at most {settings.max_pixels / 1e6:g} million"
        )
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


def upload_name(filename: str | None) -> str:
    """The client's name of an upload, only ever shown (never a path): no NUL, at most 255 bytes."""
    name = filename or "upload"
    if "\x00" in name or len(name.encode("utf-8", "surrogatepass")) > 255:
        raise HTTPException(422, f"an upload's name must be at most 255 bytes without NUL: {name[:40]!r}…")
    return name


def header_pixels(data: bytes) -> int:
    """Width x height from an image's header (Pillow opens lazily: nothing is decoded); 0 when Pillow cannot
    read the header (the model's decoder then refuses it with its own status). 20 small 16-bit PNGs, 1.5 MB
    in all, took 957 MB to decode before this check."""
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            return im.width * im.height
    except (OSError, ValueError, PILImage.DecompressionBombError):
        return 0


def stored_name(data: bytes, sha: str) -> str:
    """The name of a stored upload: its content's hash and the extension of its decoded format, never the
    client's (a JPEG with HTML appended, named x.html, was served back as text/html)."""
    with PILImage.open(io.BytesIO(data)) as im:
        fmt = im.format or ""
    return f"{sha}{FORMAT_EXTENSIONS.get(fmt, '.bin')}"


FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp"}


def store_uploads(state: ArchiveState, active: ActiveModel, payloads, preds, results) -> None:
    """Write each readable upload into the uploads folder (once per content) and add its row; its id goes
    into its result."""
    folder = state.settings.uploads
    folder.mkdir(parents=True, exist_ok=True)
    with state.sessions.begin() as s:
        for (_, data), p, r in zip(payloads, preds, results, strict=True):
            if not p.ok:
                continue
            sha = hashlib.sha256(data).hexdigest()
            path = folder / stored_name(data, sha)
            if not path.exists():  # one file per content, whatever its names; atomically: never half a file
                with atomic_write(path, "wb") as f:
                    f.write(data)
            insert_new(s, [image_row(path, sha, len(data), p, active.classifier, active.version.id)])
            r["id"] = s.scalar(select(Image.id).where(Image.sha256 == sha))
