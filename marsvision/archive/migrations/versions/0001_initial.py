"""The archive's first schema: models, images, image_vectors, corrections.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.String(80), nullable=False, unique=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("models.id"), nullable=True),
        sa.Column("corrections", sa.Integer, nullable=False),
        sa.Column("info", sa.JSON, nullable=False),
    )
    op.create_index("ix_models_active", "models", ["active"])
    op.create_table(
        "images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.Integer, nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sol", sa.Integer, nullable=True),
        sa.Column("instrument", sa.String(8), nullable=True),
        sa.Column("name_fields", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=True),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("unknown", sa.Boolean, nullable=True),
        sa.Column("novelty", sa.Float, nullable=True),
        sa.Column("margin", sa.Float, nullable=True),
        sa.Column("top_k", sa.JSON, nullable=False),
        sa.Column("reviewed_label", sa.String(64), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
    )
    for column in ("sol", "instrument", "model_id", "label", "confidence", "unknown", "reviewed_label"):
        op.create_index(f"ix_images_{column}", "images", [column])
    op.create_table(
        "image_vectors",
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id"), primary_key=True),
        sa.Column("features", sa.LargeBinary, nullable=False),
        sa.Column("texture", sa.LargeBinary, nullable=True),
        sa.Column("sketch", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id"), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("author", sa.String(120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=True),
        sa.Column("model_label", sa.String(64), nullable=True),
    )
    op.create_index("ix_corrections_image_id", "corrections", ["image_id"])


def downgrade() -> None:
    op.drop_table("corrections")
    op.drop_table("image_vectors")
    op.drop_table("images")
    op.drop_table("models")
