"""Images: search, one image's details, its picture (thumbnail, file, heatmap) and the images like it."""

from __future__ import annotations

import io
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import JSONResponse
from PIL import Image as PILImage
from sqlalchemy import select

from ...archive.content import ContentChanged, ContentGone, read_indexed
from ...archive.db import Correction, Image
from ...archive.queries import get_image, get_images, isoformat, search
from ...errors import ImageError
from ...preprocess import load_image
from ..deps import FiltersDep, ImageRowDep, ModelDep, SessionDep, StateDep, image_or_404
from ..errors import image_http_error
from ..schemas import ImageDetail, ImagePage, Similar

router = APIRouter(prefix="/api/images", tags=["images"])


@router.get("", response_class=JSONResponse, responses={200: {"model": ImagePage}})
async def list_images(
    state: StateDep,
    f: FiltersDep,
    sort: str = "id",
    descending: bool = False,
    page: Annotated[int, Query(ge=1, le=10**6)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
):
    """One page of the images that match the filters, sorted."""

    def run():
        with state.sessions() as s:
            return search(s, f, sort, descending, page, page_size, state.counts)

    try:
        # Raw JSON, not a response model (ImagePage only documents it): this is the page's busiest request
        # and ``search`` returns JSON-ready values. FastAPI's encoder for a returned dict took longer than
        # the query itself (2.5 ms a page, benchmarks/serve.py), and a response model still adds a
        # validation pass to the encoding (measured on a 12-item page: 42 µs, against 75 µs for json.dumps).
        return JSONResponse(await anyio.to_thread.run_sync(run, limiter=state.searches))
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


def image_detail(session, image_id: int) -> dict:
    """The image with its file-name fields and its corrections, oldest first."""
    d = get_image(session, image_id)
    if d is None:
        raise HTTPException(404, f"no image {image_id}")
    d["corrections"] = [
        {
            "label": c.label,
            "note": c.note,
            "author": c.author,
            "model_label": c.model_label,
            "created_at": isoformat(c.created_at),
        }
        for c in session.scalars(select(Correction).where(Correction.image_id == image_id).order_by(Correction.id))
    ]
    return d


@router.get("/{image_id}", response_model=ImageDetail)
def detail(image_id: int, session: SessionDep):
    return image_detail(session, image_id)


def _picture(img: Image, size: int) -> PILImage.Image:
    """The image's file decoded once (JPEG draft for ``size``); an unreadable file is the status of its kind."""
    try:
        return load_image(img.path, size)
    except ImageError as e:
        raise image_http_error(e, f"image {img.id} ({img.path})") from None


def _full_size(path: str) -> tuple[int, int] | None:
    """The file's width and height from its header (no decode); None when it cannot be read now."""
    try:
        with PILImage.open(path) as f:
            return f.size
    except (OSError, ValueError):
        return None


def _encoded(picture: PILImage.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, format=fmt, **options)
    return buf.getvalue()


@router.get("/{image_id}/thumbnail", response_class=Response)
def thumbnail(img: ImageRowDep, size: Annotated[int, Query(ge=32, le=1024)] = 192):
    picture = _picture(img, size)
    picture.thumbnail((size, size))
    return Response(
        _encoded(picture, "JPEG", quality=85), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"}
    )


@router.get("/{image_id}/file", response_class=Response)
def image_file(img: ImageRowDep):
    """The image as it was indexed (its file, by id): only while the file is still that content (no link
    followed, same size and SHA-256), else 409 naming the change. Its type comes from its decoded format,
    never from its name, and the answer says nosniff (security.py)."""
    try:
        data = read_indexed(img.path, img.sha256, img.size_bytes)
    except ContentGone as e:
        raise HTTPException(404, f"image {img.id}: {e}") from None
    except ContentChanged as e:
        raise HTTPException(409, f"image {img.id}: {e}") from None
    return Response(data, media_type=_media_type(data))


def _media_type(data: bytes) -> str:
    try:
        with PILImage.open(io.BytesIO(data)) as im:
            return im.get_format_mimetype() or "application/octet-stream"
    except (OSError, ValueError, PILImage.DecompressionBombError):
        return "application/octet-stream"  # a PDS label or another non-Pillow file: downloaded, never rendered


@router.get("/{image_id}/heatmap", response_class=Response)
def heatmap(
    img: ImageRowDep,
    state: StateDep,
    active: ModelDep,
    label: str | None = None,
    size: Annotated[int, Query(ge=64, le=768)] = 384,
):
    """Where the evidence for ``label`` (default: the predicted class) lies, over the image (PNG)."""
    from ...inference.explain import explain, overlay

    image_id, clf = img.id, active.classifier
    if label is not None and label not in clf.class_names:
        raise HTTPException(422, f"unknown class {label!r}")
    key = (image_id, label, size, active.version.id)
    cached = state.heatmaps.get(key)
    if cached is not None:
        return Response(cached, media_type="image/png", headers={"Cache-Control": "max-age=600"})
    if not state.heatmap_slots.acquire(blocking=False):
        raise HTTPException(503, "busy making heatmaps; retry shortly", headers={"Retry-After": "1"})
    try:
        # Decoded once, as the model decodes it (JPEG draft for its input size: the same pixels, so the same
        # prediction, as when the image was indexed); that picture serves the overlay too when it is at
        # least ``size`` on its longer side or is the file's full resolution (MSL images, ~256 px, are).
        picture = _picture(img, clf.input_size)
        e = explain(clf, [picture], [label] if label else [])[0]
    except ValueError as err:  # a model without feature maps
        raise HTTPException(422, str(err)) from None
    finally:
        state.heatmap_slots.release()
    if not e.prediction.ok:  # not expected: the picture is decoded already
        raise HTTPException(422, f"image {image_id}: {e.prediction.error}")
    if max(picture.size) < size and picture.size != _full_size(img.path):  # reduced by the draft: again, larger
        picture = _picture(img, size)
    png = _encoded(overlay(picture, e.heatmaps[label or e.prediction.label], size), "PNG")
    state.heatmaps.put(key, png)
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=600"})


@router.get("/{image_id}/similar", response_model=Similar)
def similar(
    image_id: int, state: StateDep, session: SessionDep, f: FiltersDep, k: Annotated[int, Query(ge=1, le=100)] = 12
):
    """The ``k`` images most like this one among those matching the filters (as /api/images takes them)."""
    image_or_404(session, image_id)
    near = dict(state.vectors.similar(session, image_id, k, f))
    items = get_images(session, list(near))
    for d in items:
        d["similarity"] = round(near[d["id"]], 4)
    return {"image": image_id, "items": items}
