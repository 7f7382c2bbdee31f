"""The case store's tables (SQLAlchemy 2.x declarative models, dialect-neutral).

One row per case (its report as analysed, its options), per stored image (a
content-addressed file in the store folder), per located cell (the model's label
and the current reviewed label) and per review action. ``reviews`` is the audit
trail: rows are only ever added, never updated or deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class CaseRow(Base):
    __tablename__ = "cases"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # newest first
    case_id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    um_per_px: Mapped[float | None] = mapped_column(Float, nullable=True)  # as asked (None = default)
    stain: Mapped[str] = mapped_column(String(16), default="wright")
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)  # the analysed report, overlays left out
    n_images: Mapped[int] = mapped_column(Integer, default=0)
    n_cells: Mapped[int] = mapped_column(Integer, default=0)


class ImageRow(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("case_id", "image_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.case_id"), index=True)
    image_index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))  # the uploaded file's name
    sha256: Mapped[str] = mapped_column(String(64))
    file: Mapped[str] = mapped_column(String(255))  # relative to the store folder
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    um_per_px: Mapped[float] = mapped_column(Float)


class CellRow(Base):
    __tablename__ = "cells"
    __table_args__ = (UniqueConstraint("case_id", "image_index", "cell_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.case_id"), index=True)
    image_index: Mapped[int] = mapped_column(Integer)
    cell_id: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))
    touches_border: Mapped[bool] = mapped_column(Boolean, default=False)
    model_label: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)  # reviewed label, None = not reviewed
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)  # the reviewer agreed with the model
    reviewed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # optimistic locking: two servers reviewing the same cell at once never record a stale old label
    version: Mapped[int] = mapped_column(Integer, default=0)

    __mapper_args__ = {"version_id_col": version}


class ReviewRow(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.case_id"), index=True)
    image_index: Mapped[int] = mapped_column(Integer)
    cell_id: Mapped[int] = mapped_column(Integer)
    reviewer: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    action: Mapped[str] = mapped_column(String(16))  # "relabel" | "confirm"
    old_label: Mapped[str] = mapped_column(String(64))  # the label the cell had just before
    new_label: Mapped[str] = mapped_column(String(64))
