"""PDS products' label fields and the camera flag on the images table.

All nullable: rows of plain JPEG/PNG files keep None there. ``instrument`` widens from 8 to 32 characters
for label identifiers that are not MSL cameras (SQLite does not enforce lengths; PostgreSQL does).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = [
    sa.Column("off_camera", sa.Boolean, nullable=True),
    sa.Column("product_id", sa.String(128), nullable=True),
    sa.Column("instrument_id", sa.String(64), nullable=True),
    sa.Column("start_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("local_mean_solar_time", sa.String(32), nullable=True),
    sa.Column("sequence_id", sa.String(32), nullable=True),
    sa.Column("filter_name", sa.String(64), nullable=True),
    sa.Column("target", sa.String(64), nullable=True),
    sa.Column("lines", sa.Integer, nullable=True),
    sa.Column("samples", sa.Integer, nullable=True),
    sa.Column("bands", sa.Integer, nullable=True),
    sa.Column("site", sa.Integer, nullable=True),
    sa.Column("drive", sa.Integer, nullable=True),
]
INDEXED = ("off_camera", "product_id", "start_time", "sequence_id")  # instrument and sol have theirs (0001)


def upgrade() -> None:
    # Plain add_column, not a batch: SQLite adds nullable columns in place (a batch would copy the table).
    for column in COLUMNS:
        op.add_column("images", column)
    for name in INDEXED:
        op.create_index(f"ix_images_{name}", "images", [name])
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("images", "instrument", type_=sa.String(32), existing_type=sa.String(8))
    # Rows indexed before: their camera came from the MSL file name (MH, ML, MR, MD); the training cameras
    # are MAHLI and Mastcam (marsvision/cameras.py).
    op.execute(
        sa.text("UPDATE images SET off_camera = (instrument NOT IN ('MH', 'ML', 'MR')) WHERE instrument IS NOT NULL")
    )


def downgrade() -> None:
    for name in INDEXED:
        op.drop_index(f"ix_images_{name}", "images")
    with op.batch_alter_table("images") as batch:
        for column in COLUMNS:
            batch.drop_column(column.name)
