"""Search the archive: filters, sorting and paging, class counts, similar images, export rows. Used by the
REST API and the CLI alike, so a filter means the same everywhere."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator

import numpy as np
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..errors import UsageError
from . import counts
from .db import Image, ImageVectors, ModelVersion
from .filters import CONFIDENT, Filters, confident_condition, utc  # noqa: F401 (where the callers find them)
from .records import from_blob

SORTS = {
    "id": Image.id,
    "sol": Image.sol,
    "confidence": Image.confidence,
    "novelty": Image.novelty,
    "label": Image.label,
    "indexed_at": Image.indexed_at,
    "margin": Image.margin,
    "start_time": Image.start_time,
}

ITEM_COLUMNS = (
    Image.id,
    Image.path,
    Image.sha256,
    Image.sol,
    Image.instrument,
    Image.label,
    Image.confidence,
    Image.unknown,
    Image.novelty,
    Image.margin,
    Image.top_k,
    Image.reviewed_label,
    Image.reviewed_at,
    Image.error,
    Image.indexed_at,
    Image.size_bytes,
    Image.off_camera,
    Image.product_id,
    Image.instrument_id,
    Image.start_time,
    Image.local_mean_solar_time,
    Image.sequence_id,
    Image.filter_name,
    Image.target,
    Image.lines,
    Image.samples,
    Image.bands,
    Image.site,
    Image.drive,
    ModelVersion.version.label("model_version"),
)


def _items_query() -> Select:
    return select(*ITEM_COLUMNS).outerjoin(ModelVersion, ModelVersion.id == Image.model_id)


def isoformat(t) -> str | None:
    """UTC, always with its offset (SQLite hands times back without one)."""
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).isoformat()


def item(row) -> dict:
    d = dict(row._mapping)
    for k in ("indexed_at", "reviewed_at", "start_time"):
        d[k] = isoformat(d[k])
    return d


class CountCache:
    """Totals of recent searches for ``ttl`` seconds: paging through a filter counts its matches once,
    not on every page (a total the maintained counts cannot give, e.g. of free text, scans the images: 0.3-0.9 s
    at a million rows). Writes through the server clear it; an indexer in another process shows up within
    ``ttl``."""

    def __init__(self, ttl: float = 5.0, size: int = 256):
        self.ttl, self.size, self._lock, self._totals = ttl, size, threading.Lock(), {}

    def get(self, key, count) -> int:
        now = time.monotonic()
        with self._lock:
            hit = self._totals.get(key)
            if hit and now - hit[1] < self.ttl:
                return hit[0]
        total = count()
        with self._lock:
            if len(self._totals) >= self.size:
                self._totals.clear()
            self._totals[key] = (total, now)
        return total

    def clear(self) -> None:
        with self._lock:
            self._totals.clear()


def total_count(session: Session, filters: Filters) -> int:
    """How many images pass ``filters``: from the maintained counts when they can say it (archive/counts.py),
    else counted on the images."""
    total = counts.total(session, filters)
    return total if total is not None else session.scalar(filters.apply(select(func.count(Image.id))))


def search(
    session: Session,
    filters: Filters,
    sort: str = "id",
    descending: bool = False,
    page: int = 1,
    page_size: int = 50,
    counts: CountCache | None = None,
) -> dict:
    """{total, page, page_size, items}: one page of the matching images, without their vectors."""
    if sort not in SORTS:
        raise UsageError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    count = lambda: total_count(session, filters)  # noqa: E731
    total = counts.get(filters.key(), count) if counts else count()
    column = SORTS[sort].desc() if descending else SORTS[sort].asc()
    order = (column, Image.id.desc() if descending else Image.id.asc())
    # The page's ids first (from an index when one covers filter and sort: sorting ids is cheap), then
    # their rows, in one statement: sorting thousands of whole rows to keep 50 is what made a search
    # slow, and one statement instead of two cut a search's server CPU by a sixth (benchmarks/serve.py).
    page_ids = (
        filters.apply(select(Image.id))
        .order_by(*order)
        .limit(page_size)
        .offset((page - 1) * page_size)
        .scalar_subquery()
    )
    rows = session.execute(_items_query().where(Image.id.in_(page_ids)).order_by(*order)).all()
    return {"total": total, "page": page, "page_size": page_size, "items": [item(r) for r in rows]}


def get_images(session: Session, image_ids: list[int]) -> list[dict]:
    """The images ``image_ids`` (in that order, missing ones left out) with their file-name fields, in
    one query: a page of similar images or of the review queue is one round trip, not one per image."""
    if not image_ids:
        return []
    rows = session.execute(_items_query().add_columns(Image.name_fields).where(Image.id.in_(image_ids))).all()
    by_id = {r.id: item(r) for r in rows}
    return [by_id[i] for i in image_ids if i in by_id]


def get_image(session: Session, image_id: int) -> dict | None:
    found = get_images(session, [image_id])
    return found[0] if found else None


def class_counts(session: Session) -> list[dict]:
    """Per class: images the model gave it, of them reviewed, and images curators gave it (from the maintained
    counts, archive/counts.py: at a million rows, grouping the images took 313 ms and pushed a SQLite server
    to ~1 GB)."""
    rows, curated_rows = counts.classes(session)
    model, reviewed = {r[0]: r[1] for r in rows}, {r[0]: r[2] for r in rows}
    curated = dict(curated_rows)
    names = sorted(set(model) | set(curated))
    return [
        {
            "label": n,
            "count": model.get(n, 0),
            "reviewed": reviewed.get(n, 0),
            "not_reviewed": model.get(n, 0) - reviewed.get(n, 0),
            "curated": curated.get(n, 0),
        }
        for n in names
    ]


EXPORT_COLUMNS = (
    "path",
    "label",
    "confidence",
    "unknown",
    "novelty",
    "top_k",
    "error",  # as `predict` writes
    "id",
    "sha256",
    "size_bytes",
    "sol",
    "instrument",
    "model_version",
    "reviewed_label",
    "reviewed_at",
    "indexed_at",
    "margin",
    "off_camera",  # the PDS label fields and the camera flag (empty for plain JPEG/PNG files)
    "product_id",
    "instrument_id",
    "start_time",
    "local_mean_solar_time",
    "sequence_id",
    "filter_name",
    "target",
    "lines",
    "samples",
    "bands",
    "site",
    "drive",
)


def export_page(session: Session, filters: Filters, after: int = 0, chunk: int = 2000) -> list[dict]:
    """Up to ``chunk`` matching images with ids above ``after``, in id order (one keyset page)."""
    rows = session.execute(filters.apply(_items_query()).where(Image.id > after).order_by(Image.id).limit(chunk)).all()
    return [{k: d[k] for k in EXPORT_COLUMNS} for d in map(item, rows)]


def export_rows(session: Session, filters: Filters, chunk: int = 2000) -> Iterator[dict]:
    """Every matching image in id order, streamed in chunks (keyset paging: flat memory)."""
    last = 0
    while True:
        rows = export_page(session, filters, last, chunk)
        yield from rows
        if len(rows) < chunk:
            return
        last = rows[-1]["id"]


def own_sketch(session: Session, image_id: int) -> np.ndarray | None:
    """An image's stored sketch (the similar-images vector), or None."""
    blob = session.scalar(select(ImageVectors.sketch).where(ImageVectors.image_id == image_id))
    return None if blob is None else from_blob(blob, "f2")
