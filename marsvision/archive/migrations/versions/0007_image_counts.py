"""Image counts kept by the database: the ``image_counts`` table (archive/counts.py), filled from the
images here and kept in step with them by triggers on ``images`` (insert, delete, and an update of a counted
column), in the writing transaction. Facets, the timeline, the class counts and search totals read it.

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
    op.create_table(
        "image_counts",
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("sol", sa.Integer, nullable=False),
        sa.Column("instrument", sa.String(32), nullable=False),
        sa.Column("unknown", sa.SmallInteger, nullable=False),
        sa.Column("reviewed_label", sa.String(64), nullable=False),
        sa.Column("off_camera", sa.SmallInteger, nullable=False),
        sa.Column("error", sa.SmallInteger, nullable=False),
        sa.Column("confidence_pct", sa.SmallInteger, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint(*counts.DIMENSIONS, name="pk_image_counts"),
        sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    counts.rebuild(bind)
    counts.create_triggers(bind)


def downgrade() -> None:
    bind = op.get_bind()
    counts.drop_triggers(bind)
    if bind.dialect.name == "postgresql":
        bind.exec_driver_sql("DROP FUNCTION IF EXISTS marsvision_image_counts()")
    op.drop_table("image_counts")
