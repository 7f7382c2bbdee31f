"""The files a run writes: case reports, overlays and the tables regenerated from them."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import MorphError
from ..io import read_json, write_csv
from ..labels import ALL_LABELS, PLATELET, UNCLASSIFIED
from .options import BatchSummary, Discovery, InputError, PlannedCase, report_cells

log = logging.getLogger(__name__)

CELLS_COLUMNS: tuple[str, ...] = (
    "case", "image", "id", "x", "y", "label", "confidence", "kind", "touches_border",
)
#: Labels with a count column in ``cases.csv`` (fixed, so every row has the same columns).
COUNT_LABELS: tuple[str, ...] = ALL_LABELS + (UNCLASSIFIED, PLATELET)
CASES_COLUMNS: tuple[str, ...] = (
    ("case", "status", "images", "images_failed", "cells_counted")
    + tuple(f"n_{lab}" for lab in COUNT_LABELS)
    + ("key_findings",)
    + tuple(f"{k}_{i}" for i in (1, 2, 3) for k in ("differential", "score"))
    + ("error",)
)
ERRORS_COLUMNS: tuple[str, ...] = ("file", "code", "message")


def case_json_path(out_dir: str | os.PathLike[str], case_id: str) -> Path:
    """``OUT_DIR/cases/<case id>.json`` (the case id is its relative path in the input)."""
    return Path(out_dir, "cases", *case_id.split("/")).with_name(case_id.split("/")[-1] + ".json")


def overlay_path(out_dir: str | os.PathLike[str], rel: str) -> Path:
    """``OUT_DIR/overlays/<image relative path>.png``."""
    parts = rel.split("/")
    return Path(out_dir, "overlays", *parts[:-1], parts[-1] + ".png")



def read_case_file(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except MorphError as exc:
        log.warning("ignoring an unreadable case file: %s", exc)
        return None
    return data if isinstance(data, dict) else None


_NOT_DECIDED = (None, "", "none", "not_assessed", "indeterminate")


def _key_findings(findings: Any) -> str:
    """A short, stable text of the findings worth a glance: graded red-cell morphologies,
    decided statuses (reticulocytes absent, hypersegmented neutrophils present...) and
    too little evidence. Semicolon-separated."""
    if not isinstance(findings, dict):
        return ""
    parts: list[str] = []
    ev = findings.get("evidence")
    if isinstance(ev, dict) and ev.get("enough") is False:
        parts.append(str(ev.get("message") or "too few cells assessed"))
    morph = findings.get("rbc_morphology")
    if isinstance(morph, dict):
        for lab, v in morph.items():
            if isinstance(v, dict) and v.get("grade") not in _NOT_DECIDED:
                parts.append(f"{lab} {v['grade']}")
    for key in ("macro_ovalocytes", "anisocytosis"):
        v = findings.get(key)
        if isinstance(v, dict) and v.get("grade") not in _NOT_DECIDED:
            parts.append(f"{key} {v['grade']}")
    for key in ("reticulocytes", "nucleated_rbc", "hypersegmented_neutrophils", "megaloblasts"):
        v = findings.get(key)
        if isinstance(v, dict) and v.get("status") not in _NOT_DECIDED:
            parts.append(f"{key} {v['status']}")
    return "; ".join(parts)


def _case_row(case_id: str, report: dict[str, Any] | None, error: InputError | None) -> list[Any]:
    if report is None:
        msg = f"{error.code}: {error.message}" if error else "not scored"
        return [case_id, "failed", "", "", ""] + [""] * len(COUNT_LABELS) + [""] + [""] * 6 + [msg]
    ims = report.get("images", [])
    n_failed = sum(1 for im in ims if im.get("error"))
    status = "ok" if n_failed == 0 else ("failed" if n_failed == len(ims) else "partial")
    counts = report.get("counts", {})
    diffs = list(report.get("differentials") or [])[:3]
    dx: list[Any] = []
    for i in range(3):
        if i < len(diffs):
            d = diffs[i]
            score = d.get("score")
            dx += [d.get("id") or d.get("name"), "" if score is None else round(float(score), 4)]
        else:
            dx += ["", ""]
    return (
        [case_id, status, len(ims), n_failed, sum(int(v) for v in counts.values())]
        + [int(counts.get(lab, 0)) for lab in COUNT_LABELS]
        + [_key_findings(report.get("findings"))]
        + dx
        + [""]
    )


def _cell_rows(case_id: str, report: dict[str, Any]) -> Iterator[list[Any]]:
    for im in report.get("images", []):
        for c in im.get("cells", []):
            yield [case_id, im["path"], c["id"], c["x"], c["y"], c["label"], c["confidence"],
                   c.get("kind", ""), int(bool(c.get("touches_border")))]


def batch_block(pl: PlannedCase, input_s: str) -> dict[str, Any]:
    assert pl.task is not None
    return {
        "fingerprint": pl.fingerprint,
        "input_dir": input_s,
        "inputs": [im.rel for im in pl.spec.images],
        "context": pl.task.options.context,
    }


def is_current(out: Path, pl: PlannedCase, overlays: bool) -> bool:
    doc = read_case_file(case_json_path(out, pl.spec.case_id))
    if not doc or (doc.get("batch") or {}).get("fingerprint") != pl.fingerprint:
        return False
    if overlays:
        failed = {im.get("path") for im in doc.get("images", []) if im.get("error")}
        for im in pl.spec.images:
            if im.path not in failed and not overlay_path(out, im.rel).is_file():
                return False
    return True


def write_tables(
    out: Path,
    planned: list[PlannedCase],
    disc: Discovery,
    run_errors: dict[str, InputError],
    duplicates: list[list[str]],
) -> BatchSummary:
    """Regenerate cells.csv, cases.csv and errors.csv from the case files (sorted)."""
    errors: list[InputError] = list(disc.errors)
    stats = {"ok": 0, "partial": 0, "failed": 0, "images_ok": 0, "images_failed": 0, "cells": 0,
             "cells_counted": 0}

    def reports() -> Iterator[tuple[str, dict[str, Any] | None, InputError | None]]:
        for pl in planned:
            cid = pl.spec.case_id
            err = pl.error or run_errors.get(cid)
            doc = None
            if err is None:
                doc = read_case_file(case_json_path(out, cid))
                if doc is None or (doc.get("batch") or {}).get("fingerprint") != pl.fingerprint:
                    doc = None
                    err = InputError(cid, "analysis_failed", "no current report for this case; run again")
            yield cid, doc, err

    def case_rows() -> Iterator[list[Any]]:
        for cid, doc, err in reports():
            row = _case_row(cid, doc, err)
            stats[row[1]] += 1
            if doc is None:
                assert err is not None
                errors.append(err)
            else:
                for im in doc.get("images", []):
                    if im.get("error"):
                        stats["images_failed"] += 1
                        e = im["error"]
                        errors.append(InputError(im["path"], e.get("code", ""), e.get("message", "")))
                    else:
                        stats["images_ok"] += 1
                stats["cells_counted"] += int(row[4] or 0)
                stats["cells"] += report_cells(doc)
            yield row

    def cell_rows() -> Iterator[list[Any]]:
        for cid, doc, _err in reports():
            if doc is not None:
                yield from _cell_rows(cid, doc)

    write_csv(out / "cases.csv", CASES_COLUMNS, case_rows())
    write_csv(out / "cells.csv", CELLS_COLUMNS, cell_rows())
    errors.sort(key=lambda e: (e.file, e.code, e.message))
    write_csv(out / "errors.csv", ERRORS_COLUMNS, ([e.file, e.code, e.message] for e in errors))
    return BatchSummary(
        out_dir=out, cases=len(planned), cases_ok=stats["ok"], cases_partial=stats["partial"],
        cases_failed=stats["failed"], images_ok=stats["images_ok"], images_failed=stats["images_failed"],
        files_not_scored=len(disc.errors), cells=stats["cells"], cells_counted=stats["cells_counted"],
        errors=len(errors),
        scored=0, skipped=0, images_scored=0, cells_scored=0, seconds=0.0, duplicates=duplicates,
    )
