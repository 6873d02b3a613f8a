"""Two indexes for what was still slow at a million rows (benchmarks/results/serve-1m.md, browse-1000000.md):

- ``ix_image_counts_camera`` (SQLite): the per-sol counts by camera, then sol, so the camera timeline groups
  (camera, sol) in index order instead of sorting 300 000 count rows or summing every camera in one pass by
  sol (``counts.per_sol``). The table has no rowid: the index holds the key's other columns too, so the
  timeline's filters are checked in it. PostgreSQL groups by hashing and gets no such index (each index also
  slows its statement triggers).
- ``ix_images_label_reviewed_confidence`` replaces ``ix_images_label_reviewed`` (label, reviewed_label): a
  class's images without a curator's label, least confident first (the review queue's search), come in
  order from the index instead of being sorted; the class counts it served read ``image_totals`` since 0007.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from alembic import op

from marsvision.archive import counts

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

REVIEW_INDEX = ("ix_images_label_reviewed_confidence", ["label", "reviewed_label", "confidence", "id"])
OLD_REVIEW_INDEX = ("ix_images_label_reviewed", ["label", "reviewed_label"])


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(counts.CAMERA_INDEX, "image_counts", list(counts.CAMERA_INDEX_COLUMNS))
    op.drop_index(OLD_REVIEW_INDEX[0], "images")
    op.create_index(REVIEW_INDEX[0], "images", REVIEW_INDEX[1])


def downgrade() -> None:
    op.drop_index(REVIEW_INDEX[0], "images")
    op.create_index(OLD_REVIEW_INDEX[0], "images", OLD_REVIEW_INDEX[1])
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index(counts.CAMERA_INDEX, "image_counts")
