"""Search the archive: filters, sorting and paging, class counts, similar images, export rows. Used by the
REST API and the CLI alike, so a filter means the same everywhere."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from ..errors import UsageError
from .db import Image, ImageVectors, ModelVersion
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

CONFIDENT = 0.9  # the "confident labels only" view: calibrated confidence at least this


def utc(t: dt.datetime) -> dt.datetime:
    """A time from a request in UTC (a time without an offset is UTC, as the archive stores times)."""
    return t.astimezone(dt.timezone.utc) if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def confident_condition(v: bool):
    """Calibrated confidence ≥ 0.9, not unknown, and not from a camera outside the training cameras (a
    camera that is not known counts as not outside: its calibration cannot be said to be off)."""
    yes = (Image.confidence >= CONFIDENT) & Image.unknown.is_(False) & Image.off_camera.isnot(True)
    if v:
        return yes
    return or_(
        Image.confidence.is_(None), Image.confidence < CONFIDENT, Image.unknown.isnot(False), Image.off_camera.is_(True)
    )


@dataclass
class Filters:
    """Which images: every field is optional, and they combine with AND."""

    label: str | None = None  # the model's label
    min_confidence: float | None = None
    max_confidence: float | None = None
    unknown: bool | None = None
    sol_min: int | None = None
    sol_max: int | None = None
    instrument: str | None = None  # MH, ML, MR, MD (any case), or a label's identifier as written
    reviewed: bool | None = None  # has a curator's label
    reviewed_label: str | None = None
    error: bool | None = None  # could not be read
    q: str | None = None  # part of the file name or of the product id
    off_camera: bool | None = None  # from a camera outside the training cameras
    product_id: str | None = None
    sequence_id: str | None = None
    target: str | None = None  # any case
    filter_name: str | None = None
    start_time_min: dt.datetime | None = None
    start_time_max: dt.datetime | None = None
    site: int | None = None
    drive: int | None = None
    confident: bool | None = None  # true: confident_condition; false: the rest

    def key(self) -> tuple:
        """Hashable, for caches of results keyed by the filters."""
        return tuple(vars(self).items())

    def without(self, *names: str) -> Filters:
        """These filters but ``names``: a facet is counted under every filter except its own."""
        return replace(self, **dict.fromkeys(names))

    def apply(self, q: Select) -> Select:
        for condition in self.conditions():
            q = q.where(condition)
        return q

    def conditions(self) -> list:
        """The SQL conditions of the filters that are set (they combine with AND)."""
        conditions = {
            "label": lambda v: Image.label == v,
            "min_confidence": lambda v: Image.confidence >= v,
            "max_confidence": lambda v: Image.confidence < v,
            "unknown": lambda v: Image.unknown.is_(v),
            "sol_min": lambda v: Image.sol >= v,
            "sol_max": lambda v: Image.sol <= v,
            # as written or upper-cased: "mr" finds MR, and a label's identifier is found as it was stored
            # (an upper-case code stays an equality: the (instrument, sol, id) index then gives the sol order)
            "instrument": lambda v: Image.instrument == v if v == v.upper() else Image.instrument.in_([v, v.upper()]),
            "reviewed": lambda v: Image.reviewed_label.is_not(None) if v else Image.reviewed_label.is_(None),
            "reviewed_label": lambda v: Image.reviewed_label == v,
            "error": lambda v: Image.error.is_not(None) if v else Image.error.is_(None),
            "q": lambda v: or_(Image.path.contains(v, autoescape=True), Image.product_id.contains(v, autoescape=True)),
            "off_camera": lambda v: Image.off_camera.is_(v),
            "product_id": lambda v: Image.product_id == v,
            "sequence_id": lambda v: Image.sequence_id == v,
            "target": lambda v: func.lower(Image.target) == v.lower(),
            "filter_name": lambda v: Image.filter_name == v,
            # in UTC: SQLite keeps times as text without their offset (SQLAlchemy writes the wall time it is
            # given, and the archive writes UTC), so a time in another zone would compare wrongly there
            "start_time_min": lambda v: Image.start_time >= utc(v),
            "start_time_max": lambda v: Image.start_time <= utc(v),
            "site": lambda v: Image.site == v,
            "drive": lambda v: Image.drive == v,
            "confident": confident_condition,
        }
        return [conditions[f.name](getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]


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
    from . import counts  # counts.py reads Filters from here

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
    from . import counts

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
