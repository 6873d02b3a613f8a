"""Similar images on PostgreSQL with pgvector: the HNSW index of image_vectors.embedding (migration 0005v
makes the column, its trigger and the index when the server has the extension).

The filters are conditions of the same query, so the index walk skips rows that do not match; with
pgvector ≥ 0.8 ``hnsw.iterative_scan`` keeps walking until ``k`` rows match (or ``hnsw.max_scan_tuples``
rows were seen). A very selective filter the planner answers from its b-tree index and an exact sort;
should the walk still return fewer than k, the query runs again without the index (exact), so k come
back when k match.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, Table, cast, literal, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.types import UserDefinedType

from .db import Image
from .queries import Filters, own_sketch
from .records import SKETCH_DIMS

EF_SEARCH = 100  # candidates the walk keeps (pgvector: 40); 200 and 400 gained no recall on 100 000 rows


class HalfVec(UserDefinedType):
    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return f"halfvec({SKETCH_DIMS})"


# Not in db.py's model: the column exists only where pgvector does, and only the trigger writes it.
_vectors = Table(
    "image_vectors", MetaData(), Column("image_id", Integer, primary_key=True), Column("embedding", HalfVec())
)


def has_pgvector(engine: Engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.exec_driver_sql(
                "SELECT 1 FROM information_schema.columns WHERE table_name = 'image_vectors' "
                "AND column_name = 'embedding' AND table_schema = current_schema()"
            ).first()
        )


class PgVectorIndex:
    """``VectorIndex`` on pgvector: one query per request, nothing held in the server."""

    def __init__(self, ef_search: int = EF_SEARCH):
        self.ef_search = int(ef_search)
        self._iterative: bool | None = None

    def sync(self, session: Session) -> None:  # the trigger keeps the column in step
        return None

    def similar(
        self, session: Session, image_id: int, k: int, filters: Filters | None = None
    ) -> list[tuple[int, float]]:
        q = own_sketch(session, image_id)
        if q is None:
            return []
        if self._iterative is None:
            version = session.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
            self._iterative = tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)
        # SET LOCAL: for this request's transaction only (the session is rolled back at its end).
        session.execute(text(f"SET LOCAL hnsw.ef_search = {max(self.ef_search, k)}"))
        if self._iterative:
            # relaxed_order: the walk may return rows slightly out of order; they are sorted again below.
            session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        vector = cast(literal("[" + ",".join(f"{x:.5g}" for x in q.tolist()) + "]"), HalfVec())
        distance = _vectors.c.embedding.op("<#>")(vector)  # the negative inner product

        def query(order):
            stmt = (
                select(_vectors.c.image_id, distance.label("distance"))
                .join(Image, Image.id == _vectors.c.image_id)
                .where(_vectors.c.image_id != image_id)
                .order_by(order)
                .limit(k)
            )
            return session.execute(filters.apply(stmt) if filters is not None else stmt).all()

        rows = query(distance)
        if len(rows) < k:
            # The walk gave up (``hnsw.max_scan_tuples``) before k matched: a selective filter whose rows the
            # planner thought many. Ordered by an expression the index cannot serve, the same query scores
            # every matching row exactly, so k come back when k match.
            rows = query(distance + 0)
        return sorted(((int(r[0]), -float(r[1])) for r in rows), key=lambda r: -r[1])
