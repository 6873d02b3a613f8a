"""Image counts kept by the database: the ``image_counts`` (per sol) and ``image_totals`` tables
(archive/counts.py), filled from the images here and kept in step with them by triggers on ``images``
(insert, delete, and an update of a counted column), in the writing transaction. Facets, the timeline, the
class counts and search totals read them. Filling them took 5.4 s for a million images (SQLite, 2 shared
cores).

A later migration that rebuilds ``images`` on SQLite (Alembic's batch mode copies the table and drops the
old one) drops these triggers with it: it must create them again (``counts.create_triggers``) and rebuild
the counts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

from marsvision.archive import counts

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table, dims in counts.TABLES.items():
        columns = {
            "sol": sa.Integer,
            "label": sa.String(64),
            "instrument": sa.String(32),
            "reviewed_label": sa.String(64),
        }
        op.create_table(
            table,
            *(sa.Column(d, columns.get(d, sa.SmallInteger), nullable=False) for d in dims),
            sa.Column("n", sa.Integer, nullable=False),
            sa.PrimaryKeyConstraint(*dims, name=f"pk_{table}"),
            sqlite_with_rowid=False,
        )
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":  # PostgreSQL groups by hashing, and each index slows its triggers
        op.create_index(counts.CUBE_INDEX, "image_counts", list(counts.CUBE_INDEX_COLUMNS))
    counts.rebuild(bind)
    counts.create_triggers(bind)


def downgrade() -> None:
    bind = op.get_bind()
    counts.drop_triggers(bind)
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql("DROP FUNCTION IF EXISTS marsvision_image_counts()")
    for table in counts.TABLES:
        op.drop_table(table)
