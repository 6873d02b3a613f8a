"""Which images a search means: the filters (every field optional, combined with AND) as SQL conditions on
``images``. Their own module so that the maintained counts (counts.py) read them without importing the
search (queries.py), which reads the counts."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields, replace

from sqlalchemy import Select, func, or_

from .db import Image

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
