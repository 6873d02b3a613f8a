"""Training images' features, stored once, so a refit never decodes an image.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "training_images",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("features_from", sa.String(80), nullable=False),  # the model version that computed them
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("sol", sa.Integer, nullable=True),
        sa.Column("features", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_training_images_features_from", "training_images", ["features_from"])
    op.create_index("ix_images_margin", "images", ["margin"])


def downgrade() -> None:
    op.drop_index("ix_images_margin", "images")
    op.drop_table("training_images")
