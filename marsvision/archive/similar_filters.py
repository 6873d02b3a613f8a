"""Which images a filtered similar search may return, asked of the images table (archive/vectors.py uses
these; the filters are ``Filters``, as /api/images applies them)."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
from sqlalchemy import ARRAY, Integer, any_, bindparam, func, select
from sqlalchemy.orm import Session

from .db import Image
from .queries import Filters

EXACT_CHUNK = 50_000  # ids of a filter read and scored at a time (bounded memory)


def has_filters(filters: Filters | None) -> bool:
    return filters is not None and any(getattr(filters, f.name) is not None for f in fields(filters))


def few_matching(session: Session, filters: Filters, cap: int) -> np.ndarray | None:
    """The ids of the images matching ``filters`` when at most ``cap`` do, else None; counting stops at
    ``cap`` + 1 (an index range or scan that far), so a broad filter costs a bounded count, not its rows."""
    capped = filters.apply(select(Image.id)).limit(cap + 1).subquery()
    if (session.scalar(select(func.count()).select_from(capped)) or 0) > cap:
        return None
    return fetch_ids(session, filters.apply(select(Image.id)))


def fetch_ids(session: Session, stmt) -> np.ndarray:
    """The ids ``stmt`` selects, from the database driver's rows as they are: SQLAlchemy's row processing
    cost ~2 µs an id (88-130 ms for 42 000 at a million rows), the driver's rows ~0.6 µs."""
    result = session.connection().execute(stmt)
    try:
        return np.array(result.cursor.fetchall(), np.int64).reshape(-1)
    finally:
        result.close()


def matching_chunks(session: Session, filters: Filters | None, chunk: int = EXACT_CHUNK):
    """The ids of the images matching ``filters``, ``chunk`` at a time, in whatever order the database
    finds them (the caller keeps the best of every chunk, ties by id): one statement read as a stream.
    Paging by id instead (``id > last ORDER BY id``) made SQLite walk the label index in rowid order and
    look every row up for the rest of the filter: label + sol ≥ 700 at a million rows, 52 000 ids, took
    2.1 s against 38 ms from the covering (label, sol, id) index."""
    stmt = (filters or Filters()).apply(select(Image.id))
    # The driver's cursor, read as it is (SQLAlchemy's row processing cost ~2 µs an id, the driver's ~0.6):
    # sqlite3 steps the statement as it is read; psycopg's client-side cursor holds the ids (8 bytes a row).
    # Not ``stream_results``: its buffered strategy reads rows ahead of the raw cursor.
    result = session.connection().execute(stmt)
    try:
        while rows := result.cursor.fetchmany(chunk):
            yield np.array(rows, np.int64).reshape(-1)
    finally:
        result.close()


def best(ids: np.ndarray, sims: np.ndarray, k: int, skip: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest of ``sims`` (with their ``ids``, ``skip`` left out), best first, ties by id."""
    keep = ids != skip
    ids, sims = ids[keep], sims[keep]
    order = np.lexsort((ids, -sims))[:k]
    return ids[order], sims[order]


def matching(session: Session, ids: list[int], filters: Filters | None) -> set[int]:
    """Those of ``ids`` whose images exist and match ``filters`` (one primary-key query)."""
    if not ids:
        return set()
    if session.bind.dialect.name == "sqlite":
        # Without ANALYZE statistics SQLite walks a filter's own index (label, confidence: ~100 000 rows
        # at a million) instead of looking the candidates up by id: 1.4-8.5 s a request, measured at 1M
        # rows. ``NOT INDEXED`` leaves it the rowid lookups only. SQLAlchemy does not render table hints
        # for SQLite, hence the text: the filters compiled alone (values inlined: numbers, labels,
        # booleans, times of ``Filters``), the ids joined as numbers. Compiling the ids as an IN list of
        # literals took ~15 µs an id (8192 candidates: 0.2 s), joining them ~0.1 µs.
        where = [str(c.compile(dialect=session.bind.dialect, compile_kwargs={"literal_binds": True})) for c in
                 (filters.conditions() if filters is not None else [])]  # fmt: skip
        sql = "SELECT images.id FROM images NOT INDEXED WHERE images.id IN ({})".format(",".join(map(str, ids)))
        sql += "".join(f" AND ({w})" for w in where)
        return {r[0] for r in session.connection().exec_driver_sql(sql).fetchall()}
    q = select(Image.id).where(Image.id == any_(bindparam("ids", [int(i) for i in ids], type_=ARRAY(Integer))))
    return set(session.scalars(filters.apply(q) if filters is not None else q))
