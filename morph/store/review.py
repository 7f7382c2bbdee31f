"""The "verified" result of a case: its stored cells with the reviewers' labels, counted and
diagnosed by the same library code that analysed it (``count_cells``, ``Analyzer.diagnose``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..labels import ALL_LABELS, PLATELET, UNIDENTIFIED, kind_of
from ..pipeline import AnalysisOptions, Analyzer, count_cells
from ..types import FieldResult

#: Labels a reviewer may give: the vocabulary and platelets; never "unidentified" (a reviewer decides).
REVIEW_LABELS: tuple[str, ...] = tuple(lab for lab in ALL_LABELS if lab != UNIDENTIFIED) + (PLATELET,)

#: Review status of a case: nothing reviewed, some cells, or every counted cell.
UNREVIEWED, IN_REVIEW, VERIFIED = "unreviewed", "in_review", "verified"

CellKey = tuple[int, int]  # (image_index, cell_id)


def review_status(reviewed: int, counted: int) -> str:
    if counted > 0 and reviewed >= counted:
        return VERIFIED
    return IN_REVIEW if reviewed else UNREVIEWED


def reviewed_fields(report: Mapping[str, Any], labels: Mapping[CellKey, str]) -> list[FieldResult]:
    """The report's fields with each reviewed cell's label (and the kind that label belongs to)."""
    fields = []
    for index, image in enumerate(report.get("images") or []):
        field = FieldResult.from_dict(image)
        for cell in field.cells:
            label = labels.get((index, cell.id))
            if label is not None:
                cell.label = label
                cell.kind = kind_of(label)
        fields.append(field)
    return fields


def verified_result(
    report: Mapping[str, Any], labels: Mapping[CellKey, str], options: AnalysisOptions
) -> dict[str, Any]:
    """Counts, findings and differentials recomputed from the reviewed labels."""
    fields = reviewed_fields(report, labels)
    counts = count_cells(fields)
    # the classifier and localizer are not needed to diagnose from labelled cells
    findings, differentials = Analyzer(classifier=None, localizer=None).diagnose(counts, fields, options)
    return {"counts": counts, "findings": findings, "differentials": differentials}
