"""The case store: cases analysed by the pipeline, their images and the reviewers' labels.

:class:`CaseStore` is the only way in: it opens (and migrates) the database, stores a
case with its images, lists and reads cases, records a review of one cell (keeping
every change in the ``reviews`` audit trail), and recomputes the verified result.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from ..errors import MorphError
from ..pipeline import AnalysisOptions
from .blobs import put_blob
from .engine import make_engine, migrate, sqlite_url
from .models import CaseRow, CellRow, ImageRow, ReviewRow, utcnow
from .review import REVIEW_LABELS, CellKey, review_status, verified_result

log = logging.getLogger(__name__)

#: How often a review is retried when another writer got there first (a changed cell or a busy database).
_WRITE_ATTEMPTS = 20


@dataclass(frozen=True)
class CaseInput:
    """One analysed case to store: the report (``CaseReport.to_dict()``), the uploaded bytes of
    each image (in report order) and the options it was analysed with."""

    report: dict[str, Any]
    images: Sequence[bytes]
    um_per_px: float | None = None
    stain: str = "wright"
    context: dict[str, Any] | None = None


class CaseStore:
    """Cases, images and reviews in one database plus one folder of images.

    Args:
        folder: where the images are kept (and the SQLite file, unless ``database_url``).
        database_url: an SQLAlchemy URL (e.g. ``postgresql+psycopg://...``) for a shared
            database; ``None`` = SQLite in ``folder``.
    """

    def __init__(self, folder: str | Path, database_url: str | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(mode=0o777, parents=True, exist_ok=True)  # the umask decides: 0755/0750
        self.url = database_url or sqlite_url(self.folder)
        self.engine: Engine = make_engine(self.url)
        migrate(self.engine, lock_dir=self.folder)

    def close(self) -> None:
        self.engine.dispose()

    # -- writing a case -------------------------------------------------------------------
    def add_case(self, case: CaseInput) -> str:
        """Store a case (its analysed images and every cell); returns the new ``case_id``."""
        images = case.report.get("images") or []
        if len(images) != len(case.images):
            raise MorphError("bad_request", f"{len(images)} report images but {len(case.images)} uploads")
        case_id = uuid.uuid4().hex
        report = _without_overlays(case.report)
        rows: list[Any] = []
        for index, (image, data) in enumerate(zip(images, case.images, strict=True)):
            if image.get("error"):
                continue  # nothing was analysed: not kept
            file, digest = put_blob(self.folder, data)
            rows.append(ImageRow(
                case_id=case_id, image_index=index, name=image["path"], sha256=digest, file=file,
                width=image["width"], height=image["height"], um_per_px=image["um_per_px"],
            ))
            rows += [_cell_row(case_id, index, cell) for cell in image.get("cells") or []]
        with Session(self.engine) as session, session.begin():
            session.add(CaseRow(
                case_id=case_id, model_name=(report.get("model") or {}).get("name"),
                um_per_px=case.um_per_px, stain=case.stain, context=case.context, report=report,
                n_images=len(images), n_cells=sum(isinstance(r, CellRow) for r in rows),
            ))
            session.flush()  # the case row first: images and cells refer to it
            session.add_all(rows)
        return case_id

    # -- reading ----------------------------------------------------------------------------
    def list_cases(self, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        """One page of cases, newest first, with each case's review progress."""
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(CaseRow)) or 0
            rows = session.scalars(select(CaseRow).order_by(CaseRow.seq.desc()).limit(limit).offset(offset)).all()
            progress = _progress(session, [r.case_id for r in rows])
            cases = [_case_summary(r, *progress.get(r.case_id, (0, 0))) for r in rows]
        return {"cases": cases, "total": total, "limit": limit, "offset": offset}

    def get_case(self, case_id: str) -> dict[str, Any]:
        """The stored report with each cell's review, the case's review state and its audit trail."""
        with Session(self.engine) as session:
            case = _case_row(session, case_id)
            cells = _cells_by_key(session, case_id)
            audit = session.scalars(select(ReviewRow).where(ReviewRow.case_id == case_id).order_by(ReviewRow.id)).all()
            reviewed, counted = _progress(session, [case_id]).get(case_id, (0, 0))
            out = _case_summary(case, reviewed, counted)
            report = case.report
            for index, image in enumerate(report.get("images") or []):
                for cell in image.get("cells") or []:
                    row = cells.get((index, int(cell["id"])))
                    cell["review"] = _cell_review(row) if row is not None and row.label is not None else None
            out["report"] = report
            out["audit"] = [_audit_entry(r) for r in audit]
        return out

    def verified_report(self, case_id: str) -> dict[str, Any]:
        """Counts, findings and differentials recomputed from the reviewed labels."""
        with Session(self.engine) as session:
            case = _case_row(session, case_id)
            cells = _cells_by_key(session, case_id)
            reviewed, counted = _progress(session, [case_id]).get(case_id, (0, 0))
            summary = _case_summary(case, reviewed, counted)
            report = case.report
            options = AnalysisOptions(um_per_px=case.um_per_px, stain=case.stain, context=case.context)
        labels = {key: row.label for key, row in cells.items() if row.label is not None}
        changed = sum(1 for row in cells.values() if row.label is not None and row.label != row.model_label)
        result = verified_result(report, labels, options)
        return {
            **summary, "changed_cells": changed,
            "model_counts": report.get("counts", {}), **result, "disclaimer": report.get("disclaimer", ""),
        }

    def image_file(self, relative: str) -> Path:
        return self.folder / relative

    def case_image(self, case_id: str, image_index: int) -> tuple[Path, str]:
        """The stored file of one image of a case, and its uploaded name."""
        with Session(self.engine) as session:
            _case_row(session, case_id)
            row = session.scalar(select(ImageRow).where(ImageRow.case_id == case_id, ImageRow.image_index == image_index))
            if row is None:
                raise MorphError("not_found", f"case {case_id} has no stored image {image_index}", path="image_index")
            return self.image_file(row.file), row.name

    # -- reviewing --------------------------------------------------------------------------
    def review_cell(
        self, case_id: str, image_index: int, cell_id: int, *, reviewer: str,
        label: str | None = None, confirmed: bool = False,
    ) -> dict[str, Any]:
        """Record a reviewer's label (or confirmation) of one cell and its audit entry.

        Raises ``MorphError("bad_label")`` for a label outside :data:`REVIEW_LABELS`,
        ``("not_found")`` for an unknown case or cell, ``("bad_request")`` when there is
        nothing to record. Safe with several writers: a cell changed meanwhile is re-read.
        """
        reviewer = (reviewer or "").strip()
        if not reviewer:
            raise MorphError("bad_request", "a review needs the reviewer's name", path="reviewer")
        if label is None and not confirmed:
            raise MorphError("bad_request", "send a 'label', or 'confirmed': true", path="label")
        if label is not None and label not in REVIEW_LABELS:
            raise MorphError("bad_label", f"unknown label {label!r}; use one of {', '.join(REVIEW_LABELS)}",
                             path="label", detail={"labels": list(REVIEW_LABELS)})
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                return self._write_review(case_id, image_index, cell_id, reviewer, label)
            except (StaleDataError, OperationalError) as exc:
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
                log.debug("review retried (%s)", type(exc).__name__)
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_review(
        self, case_id: str, image_index: int, cell_id: int, reviewer: str, label: str | None
    ) -> dict[str, Any]:
        with Session(self.engine) as session, session.begin():
            _case_row(session, case_id)
            cell = session.scalar(select(CellRow).where(
                CellRow.case_id == case_id, CellRow.image_index == image_index, CellRow.cell_id == cell_id))
            if cell is None:
                raise MorphError("not_found", f"case {case_id} has no cell {cell_id} in image {image_index}",
                                 path="cell_id")
            old = cell.label if cell.label is not None else cell.model_label
            new = label if label is not None else old
            if new not in REVIEW_LABELS:
                raise MorphError("bad_label", f"the model's label {old!r} cannot be confirmed; send a label",
                                 path="label")
            now = utcnow()
            cell.label, cell.confirmed = new, new == cell.model_label
            cell.reviewed_by, cell.reviewed_at = reviewer, now
            session.add(ReviewRow(
                case_id=case_id, image_index=image_index, cell_id=cell_id, reviewer=reviewer, at=now,
                action="relabel" if label is not None else "confirm", old_label=old, new_label=new,
            ))
            session.flush()  # raises StaleDataError when another writer changed this cell first
            return {"case_id": case_id, "image_index": image_index, "cell_id": cell_id, **_cell_review(cell)}

    # -- export -----------------------------------------------------------------------------
    def reviewed_cells(self) -> list[tuple[ImageRow, CellRow]]:
        """Every reviewed cell with its stored image, oldest case first."""
        with Session(self.engine) as session:
            query = (
                select(ImageRow, CellRow)
                .join(CellRow, (CellRow.case_id == ImageRow.case_id) & (CellRow.image_index == ImageRow.image_index))
                .where(CellRow.label.is_not(None))
                .order_by(ImageRow.id, CellRow.cell_id)
            )
            return [(image, cell) for image, cell in session.execute(query).all()]


# -- helpers ------------------------------------------------------------------------------------
def _without_overlays(report: dict[str, Any]) -> dict[str, Any]:
    out = dict(report)
    out["images"] = [{k: v for k, v in im.items() if k != "overlay_png"} for im in report.get("images") or []]
    return out


def _cell_row(case_id: str, index: int, cell: dict[str, Any]) -> CellRow:
    return CellRow(
        case_id=case_id, image_index=index, cell_id=int(cell["id"]), x=float(cell["x"]), y=float(cell["y"]),
        kind=cell["kind"], touches_border=bool(cell["touches_border"]), model_label=cell["label"],
        confidence=float(cell.get("confidence") or 0.0), label=None, confirmed=False,
    )


def _case_row(session: Session, case_id: str) -> CaseRow:
    case = session.scalar(select(CaseRow).where(CaseRow.case_id == case_id))
    if case is None:
        raise MorphError("not_found", f"no stored case {case_id!r}", path="case_id")
    return case


def _cells_by_key(session: Session, case_id: str) -> dict[CellKey, CellRow]:
    rows = session.scalars(select(CellRow).where(CellRow.case_id == case_id)).all()
    return {(r.image_index, r.cell_id): r for r in rows}


def _progress(session: Session, case_ids: list[str]) -> dict[str, tuple[int, int]]:
    """case_id -> (reviewed counted cells, counted cells); border cells are not counted."""
    if not case_ids:
        return {}
    query = (
        select(CellRow.case_id, func.count(CellRow.label), func.count())
        .where(CellRow.case_id.in_(case_ids), CellRow.touches_border.is_(False))
        .group_by(CellRow.case_id)
    )
    return {cid: (int(reviewed), int(counted)) for cid, reviewed, counted in session.execute(query)}


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).isoformat()


def _case_summary(case: CaseRow, reviewed: int, counted: int) -> dict[str, Any]:
    status = review_status(reviewed, counted)
    names = [im.get("path") for im in (case.report.get("images") or [])]
    return {
        "case_id": case.case_id, "created_at": _iso(case.created_at), "model": case.model_name,
        "images": names, "n_cells": case.n_cells, "stain": case.stain, "um_per_px": case.um_per_px,
        "status": status, "verified": status == "verified", "reviewed_cells": reviewed, "counted_cells": counted,
    }


def _cell_review(cell: CellRow) -> dict[str, Any]:
    return {
        "label": cell.label, "model_label": cell.model_label, "confirmed": cell.confirmed,
        "reviewer": cell.reviewed_by, "at": _iso(cell.reviewed_at),
    }


def _audit_entry(r: ReviewRow) -> dict[str, Any]:
    return {
        "image_index": r.image_index, "cell_id": r.cell_id, "reviewer": r.reviewer, "at": _iso(r.at),
        "action": r.action, "old_label": r.old_label, "new_label": r.new_label,
    }
