"""The routes' dependencies, as ``Annotated`` types: the app's state and settings, a database session, the
active model, the search filters and write access."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Query, Request
from sqlalchemy.orm import Session

from ..archive.db import Image
from ..archive.queries import Filters
from .schemas import INT32_MAX, StorableText
from .security import write_refusal
from .settings import Settings
from .state import ActiveModel, ArchiveState


async def get_state(request: Request) -> ArchiveState:
    # async: an attribute read, so no hop to a worker thread (the search route is async for speed)
    return request.app.state.archive


StateDep = Annotated[ArchiveState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(state: StateDep) -> Iterator[Session]:
    """A session for reads; a route that writes opens its own transaction (``state.sessions.begin()``)."""
    with state.sessions() as s:
        yield s


SessionDep = Annotated[Session, Depends(get_session)]


def get_model(state: StateDep) -> ActiveModel:
    return state.model()


ModelDep = Annotated[ActiveModel, Depends(get_model)]


def require_writer(request: Request, settings: SettingsDep) -> str:
    """Write access, "token" or "anonymous": the bearer token when one is configured; else only with
    anonymous writes allowed (403 otherwise)."""
    refusal = write_refusal(settings, request.headers.get("authorization", ""))
    if refusal is not None:
        status, detail, headers = refusal
        raise HTTPException(status, detail, headers=headers or None)
    return "token" if settings.token else "anonymous"


WriterDep = Annotated[str, Depends(require_writer)]


async def search_filters(
    q: Annotated[
        StorableText | None, Query(max_length=200, description="part of the file name or of the product id")
    ] = None,
    label: Annotated[StorableText | None, Query(max_length=64)] = None,
    min_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_confidence: Annotated[float | None, Query(ge=0, le=1)] = None,
    unknown: bool | None = None,
    sol_min: Annotated[int | None, Query(ge=-INT32_MAX, le=INT32_MAX)] = None,
    sol_max: Annotated[int | None, Query(ge=-INT32_MAX, le=INT32_MAX)] = None,
    instrument: Annotated[
        StorableText | None, Query(max_length=64, description="MH, ML, MR, … or as a label writes it")
    ] = None,
    reviewed: bool | None = None,
    reviewed_label: Annotated[StorableText | None, Query(max_length=64)] = None,
    error: bool | None = None,
    off_camera: Annotated[bool | None, Query(description="from a camera outside the training cameras")] = None,
    product_id: Annotated[StorableText | None, Query(max_length=128)] = None,
    sequence_id: Annotated[StorableText | None, Query(max_length=32)] = None,
    target: Annotated[StorableText | None, Query(max_length=64, description="any case")] = None,
    filter_name: Annotated[StorableText | None, Query(max_length=64)] = None,
    start_time_min: Annotated[dt.datetime | None, Query(description="UTC when without an offset")] = None,
    start_time_max: Annotated[dt.datetime | None, Query(description="UTC when without an offset")] = None,
    site: Annotated[int | None, Query(ge=-INT32_MAX, le=INT32_MAX)] = None,
    drive: Annotated[int | None, Query(ge=-INT32_MAX, le=INT32_MAX)] = None,
    confident: Annotated[
        bool | None, Query(description="true: confidence ≥ 0.9, not unknown, not off-camera; false: the rest")
    ] = None,
) -> Filters:
    # async: plain parsing, so no hop to a worker thread and back (measured: 0.8 ms of a search)
    return Filters(
        label=label,
        min_confidence=min_confidence,
        max_confidence=max_confidence,
        unknown=unknown,
        sol_min=sol_min,
        sol_max=sol_max,
        instrument=instrument,
        reviewed=reviewed,
        reviewed_label=reviewed_label,
        error=error,
        q=q,
        off_camera=off_camera,
        product_id=product_id,
        sequence_id=sequence_id,
        target=target,
        filter_name=filter_name,
        start_time_min=start_time_min,
        start_time_max=start_time_max,
        site=site,
        drive=drive,
        confident=confident,
    )


FiltersDep = Annotated[Filters, Depends(search_filters)]


def image_or_404(session: Session, image_id: int) -> Image:
    img = session.get(Image, image_id)
    if img is None:
        raise HTTPException(404, f"no image {image_id}")
    return img


ImageId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the image's id")]


def get_image_row(image_id: ImageId, state: StateDep) -> Image:
    """The image's row, read in a session of its own that is closed before the route decodes the file:
    a decode must not hold one of the pool's connections."""
    with state.sessions() as s:
        return image_or_404(s, image_id)


ImageRowDep = Annotated[Image, Depends(get_image_row)]
