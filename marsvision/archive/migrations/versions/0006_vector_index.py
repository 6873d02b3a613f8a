"""The similarity index in the database: on PostgreSQL with pgvector (≥ 0.7, for ``halfvec``), a
``halfvec(64)`` column on image_vectors filled by a trigger from the stored float16 sketch, and an HNSW
index on it (archive/pgvector.py searches it). Nothing of that when ``CREATE EXTENSION vector`` fails (the
server lacks the extension, or the right to create it): archive/vectors.py then keeps an index file.

On SQLite, an index of image_vectors' ids alone: counting the table (the file index's staleness check) read
every 3.7 KB row before.

Revision ID: 0005v
Revises: 0004
Create Date: 2026-12-05
"""

from alembic import op
from sqlalchemy.exc import DBAPIError

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# float16 little-endian bytes -> halfvec, in SQL: the trigger makes the column in the writing transaction,
# so the index is never behind nor ahead of the table (no indexer or server code writes it).
FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION marsvision_sketch(s bytea) RETURNS halfvec AS $$
DECLARE
  out real[] := '{}';
  b int; e int; m int; v double precision;
BEGIN
  FOR i IN 0 .. length(s) / 2 - 1 LOOP
    b := get_byte(s, 2 * i) | (get_byte(s, 2 * i + 1) << 8);
    e := (b >> 10) & 31;
    m := b & 1023;
    IF e = 0 THEN v := m * 2.0 ^ (-24);
    ELSIF e = 31 THEN v := 0;  -- inf and NaN: never in a unit vector
    ELSE v := (1024 + m) * 2.0 ^ (e - 25);
    END IF;
    IF b & 32768 <> 0 THEN v := -v; END IF;
    out := out || v::real;
  END LOOP;
  RETURN out::halfvec;
END $$ LANGUAGE plpgsql IMMUTABLE STRICT;

CREATE OR REPLACE FUNCTION marsvision_image_vectors_embedding() RETURNS trigger AS $$
BEGIN
  NEW.embedding := marsvision_sketch(NEW.sketch);
  RETURN NEW;
END $$ LANGUAGE plpgsql;
"""


def _pgvector(bind) -> bool:
    """Create the extension when the server has it (in a savepoint: a failure leaves the migration going)."""
    try:
        with bind.begin_nested() as sp:
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
            version = bind.exec_driver_sql("SELECT extversion FROM pg_extension WHERE extname = 'vector'").scalar()
            if tuple(int(p) for p in version.split(".")[:2]) < (0, 7):  # no halfvec before 0.7
                sp.rollback()
                return False
        return True
    except DBAPIError:
        return False


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.create_index("ix_image_vectors_image_id", "image_vectors", ["image_id"])
        return
    if bind.dialect.name != "postgresql" or not _pgvector(bind):
        return
    bind.exec_driver_sql("ALTER TABLE image_vectors ADD COLUMN embedding halfvec(64)")
    bind.exec_driver_sql(FUNCTIONS)
    bind.exec_driver_sql(
        "CREATE TRIGGER image_vectors_embedding BEFORE INSERT OR UPDATE OF sketch ON image_vectors "
        "FOR EACH ROW EXECUTE FUNCTION marsvision_image_vectors_embedding()"
    )
    bind.exec_driver_sql("UPDATE image_vectors SET embedding = marsvision_sketch(sketch)")
    # ef_construction 128 (pgvector: 64): recall@10 0.995-1.0 against 0.888-0.967 with and without filters on
    # 100 000 clustered sketches at hnsw.ef_search 100 (benchmarks/results/pgvector_recall.md); 38 s to build.
    bind.exec_driver_sql(
        "CREATE INDEX ix_image_vectors_embedding ON image_vectors USING hnsw (embedding halfvec_ip_ops) "
        "WITH (m = 16, ef_construction = 128)"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.drop_index("ix_image_vectors_image_id", "image_vectors")
        return
    if bind.dialect.name != "postgresql":
        return
    bind.exec_driver_sql("DROP INDEX IF EXISTS ix_image_vectors_embedding")
    bind.exec_driver_sql("DROP TRIGGER IF EXISTS image_vectors_embedding ON image_vectors")
    bind.exec_driver_sql("ALTER TABLE image_vectors DROP COLUMN IF EXISTS embedding")
    bind.exec_driver_sql("DROP FUNCTION IF EXISTS marsvision_image_vectors_embedding()")
    bind.exec_driver_sql("DROP FUNCTION IF EXISTS marsvision_sketch(bytea)")
