"""Similar images on PostgreSQL with pgvector: the HNSW index of image_vectors.embedding (migration 0005v
makes the column, its trigger and the index when the server has the extension).

A filtered search first counts, up to ``EXACT_MAX``, the rows that match (one query on the images
table's indexes): when that few match, the query is ordered by an expression the HNSW index cannot serve,
so PostgreSQL scores exactly the matching rows alone (found by their b-tree indexes) and the answer is the
exact one. When more match, the filters are conditions of the index walk's query; with pgvector ≥ 0.8
``hnsw.iterative_scan`` keeps walking until enough rows match (or ``hnsw.max_scan_tuples`` rows were
seen). The walk (relaxed order) is asked for ``RERANK`` × k rows, which are sorted by their exact distance:
the first k rows a walk meets that match are not the k nearest that do. Should it still return fewer than
k, the query runs again exactly, so k come back when k match.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, Table, cast, func, literal, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.types import UserDefinedType

from .db import Image
from .queries import Filters, own_sketch
from .records import SKETCH_DIMS
from .similar_filters import has_filters

EF_SEARCH = 100  # candidates the walk keeps (pgvector: 40); 200 and 400 gained no recall on 100 000 rows
EXACT_MAX = 5_000  # a filter matching at most this many rows is scored exactly (benchmarks/results/similar_1m.md)
RERANK = 4  # rows a filtered walk returns per wanted one, sorted by exact distance
MAX_SCAN = 40_000  # rows a filtered walk may visit (pgvector's default: 20 000)


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
        vector = cast(literal("[" + ",".join(f"{x:.5g}" for x in q.tolist()) + "]"), HalfVec())
        distance = _vectors.c.embedding.op("<#>")(vector)  # the negative inner product

        def query(order, limit):
            stmt = (
                select(_vectors.c.image_id, distance.label("distance"))
                .join(Image, Image.id == _vectors.c.image_id)
                .where(_vectors.c.image_id != image_id)
                .order_by(order)
                .limit(limit)
            )
            return session.execute(filters.apply(stmt) if filters is not None else stmt).all()

        def ranked(rows):
            return sorted(((int(r[0]), -float(r[1])) for r in rows), key=lambda r: (-r[1], r[0]))[:k]

        filtered = has_filters(filters)
        if filtered:
            capped = filters.apply(select(Image.id)).limit(EXACT_MAX + 1).subquery()
            if (session.scalar(select(func.count()).select_from(capped)) or 0) <= EXACT_MAX:
                # Few match: ordered by an expression the index cannot serve, the matching rows (found by
                # their b-tree indexes) are all scored exactly.
                return ranked(query(distance + 0, k))
        # SET LOCAL: for this request's transaction only (the session is rolled back at its end).
        wide = RERANK * (k + 1) if filtered else k
        session.execute(text(f"SET LOCAL hnsw.ef_search = {max(self.ef_search, wide)}"))
        if self._iterative:
            # relaxed_order: the walk may return rows slightly out of order; they are sorted again below.
            session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            session.execute(text(f"SET LOCAL hnsw.max_scan_tuples = {MAX_SCAN}"))
        rows = query(distance, wide)
        if len(rows) < k:
            # The walk gave up (``hnsw.max_scan_tuples``) before k matched: a filter whose matches lie far
            # from this image. Ordered by an expression the index cannot serve, the same query scores every
            # matching row exactly, so k come back when k match.
            rows = query(distance + 0, k)
        return ranked(rows)
