"""cases, images, cells and the reviews audit trail

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=True),
        sa.Column("um_per_px", sa.Float(), nullable=True),
        sa.Column("stain", sa.String(16), nullable=False),
        sa.Column("context", sa.JSON(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("n_images", sa.Integer(), nullable=False),
        sa.Column("n_cells", sa.Integer(), nullable=False),
    )
    op.create_index("ix_cases_case_id", "cases", ["case_id"], unique=True)
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.case_id"), nullable=False),
        sa.Column("image_index", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("file", sa.String(255), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("um_per_px", sa.Float(), nullable=False),
        sa.UniqueConstraint("case_id", "image_index"),
    )
    op.create_index("ix_images_case_id", "images", ["case_id"])
    op.create_table(
        "cells",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.case_id"), nullable=False),
        sa.Column("image_index", sa.Integer(), nullable=False),
        sa.Column("cell_id", sa.Integer(), nullable=False),
        sa.Column("x", sa.Float(), nullable=False),
        sa.Column("y", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("touches_border", sa.Boolean(), nullable=False),
        sa.Column("model_label", sa.String(64), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("reviewed_by", sa.String(200), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.UniqueConstraint("case_id", "image_index", "cell_id"),
    )
    op.create_index("ix_cells_case_id", "cells", ["case_id"])
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("case_id", sa.String(32), sa.ForeignKey("cases.case_id"), nullable=False),
        sa.Column("image_index", sa.Integer(), nullable=False),
        sa.Column("cell_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("old_label", sa.String(64), nullable=False),
        sa.Column("new_label", sa.String(64), nullable=False),
    )
    op.create_index("ix_reviews_case_id", "reviews", ["case_id"])


def downgrade() -> None:
    for table in ("reviews", "cells", "images", "cases"):
        op.drop_table(table)
