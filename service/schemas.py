"""Pydantic request/response schemas of the API (separate from morph.types dataclasses).

The report schemas describe the JSON that :meth:`morph.types.CaseReport.to_dict`
produces; the service returns that dict as it is (the same JSON as
``morph analyze --json``), so these classes document it in OpenAPI and check
requests, they do not reshape responses.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from morph.context import STAINS, UM_PER_PX_MAX, UM_PER_PX_MIN, check_stain, check_um_per_px
from morph.errors import MorphError
from morph.pipeline import DISCLAIMER


def _library_rule(check: Any) -> AfterValidator:
    """A request field checked by the library's own rule (a 422 ``validation_error`` naming it)."""

    def validate(value: Any) -> Any:
        try:
            check(value)
        except MorphError as exc:
            raise ValueError(exc.message) from None
        return value

    return AfterValidator(validate)


#: ``um_per_px`` at the edge: the library's one scale rule (:func:`morph.context.check_um_per_px`).
UmPerPx = Annotated[
    float | None,
    _library_rule(check_um_per_px),
    Field(description=f"micrometres per pixel, {UM_PER_PX_MIN:g}-{UM_PER_PX_MAX:g} (default: the Chula "
          "1000x scale)", json_schema_extra={"minimum": UM_PER_PX_MIN, "maximum": UM_PER_PX_MAX},
          examples=[0.1]),
]
#: ``stain`` at the edge: one of the library's :data:`morph.context.STAINS`.
Stain = Annotated[str, _library_rule(check_stain), Field(json_schema_extra={"enum": list(STAINS)})]


class ErrorInfo(BaseModel):
    code: str = Field(description="stable machine-readable code", examples=["not_an_image"])
    message: str = Field(description="what is wrong, naming the file or field",
                         examples=["notes.jpg: not an image this reader understands (JPEG, PNG, TIFF, BMP)"])
    detail: Any = Field(default=None, description="extra machine-readable detail",
                        examples=[{"file": "notes.jpg"}])


class ErrorResponse(BaseModel):
    """The one error schema of every endpoint."""

    error: ErrorInfo


class CellOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    x: float
    y: float
    bbox: list[int] = Field(description="x0, y0, x1, y1 in pixels (exclusive ends)")
    kind: str = Field(description="rbc | nucleated | platelet")
    label: str
    confidence: float
    area_px: float
    diameter_px: float
    diameter_um: float | None = None
    eccentricity: float
    touches_border: bool = Field(description="cut by the image edge: shown but not counted")
    top_labels: list[list[Any]] | None = Field(default=None, description="[[label, probability], ...]")


class FieldErrorOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    path: str | None = None
    detail: Any = None


class ImageOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str = Field(description="the uploaded file's name")
    width: int
    height: int
    um_per_px: float
    scale_source: str = Field(
        default="stated", description="where um_per_px came from: stated (the request's), default (none given: "
        "the Chula scale) or estimated (none given and the default made the median red cell implausible: "
        "taken from the cells, sizes relative)",
    )
    median_rbc_diameter_um: float | None = None
    warnings: list[str] = []
    cells: list[CellOut] = []
    error: FieldErrorOut | None = Field(default=None, description="set when this image could not be analysed")
    overlay_png: str | None = Field(
        default=None, description="with overlay=true: base64 PNG of the image with each cell outlined "
        "in its label colour (same size as the image)",
    )


class DifferentialOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    score: float
    evidence_for: list[Any] = []
    evidence_against: list[Any] = []
    missing: list[Any] = []
    next_tests: list[Any] = []
    references: list[Any] = []


_REPORT_EXAMPLE: dict[str, Any] = {
    "model": {"name": "morphnet", "version": "1"},
    "images": [{
        "path": "field1.jpg", "width": 640, "height": 480, "um_per_px": 0.1, "scale_source": "stated",
        "median_rbc_diameter_um": 7.4, "warnings": [],
        "cells": [{"id": 0, "x": 101.5, "y": 88.0, "bbox": [78, 64, 125, 112], "kind": "rbc",
                   "label": "teardrop", "confidence": 0.91, "area_px": 1530.0, "diameter_px": 44.1,
                   "diameter_um": 4.41, "eccentricity": 0.82, "touches_border": False}],
    }],
    "counts": {"normal": 212, "teardrop": 14},
    "findings": {},
    "differentials": [],
    "warnings": [],
    "disclaimer": DISCLAIMER,
}


class CaseReportOut(BaseModel):
    """One case: every image's cells, the counts, findings and ranked differentials."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [_REPORT_EXAMPLE]})

    model: dict[str, Any]
    images: list[ImageOut]
    counts: dict[str, int]
    findings: dict[str, Any]
    differentials: list[DifferentialOut]
    warnings: list[str]
    disclaimer: str
    case_id: str | None = Field(default=None, description="with store=true: the stored case's id (GET /v1/cases/{case_id})")


class CellMeasureIn(BaseModel):
    """One counted cell's measurements, as ``morph diagnose`` reads them from a report: they
    let the size findings (macro-ovalocytes, elliptocytes, pencil cells, anisocytosis) be read."""

    model_config = ConfigDict(extra="forbid")

    label: str
    kind: str | None = Field(default=None, description="rbc | nucleated | platelet")
    diameter_um: float | None = Field(default=None, ge=0, le=1000)
    eccentricity: float | None = Field(default=None, ge=0, le=1)
    field: int | str | None = Field(default=None, description="the field (image) the cell was counted on")


class DiagnoseRequest(BaseModel):
    """Counts from elsewhere (a manual differential, another analyser) -> findings and differentials."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "counts": {"normal": 180, "teardrop": 22, "macrocyte": 30, "hypersegmented_neutrophil": 3},
            "um_per_px": 0.1,
            "context": {"age_years": 67, "hb_g_dl": 8.9, "mcv_fl": 112},
        }]},
    )

    counts: dict[str, Annotated[int, Field(ge=0, le=10_000_000)]] = Field(
        description="cells counted per label (labels from GET /v1/labels)"
    )
    um_per_px: UmPerPx = None
    context: dict[str, Any] | None = Field(
        default=None, description="clinical context (fields from the differentials rules), optional"
    )
    stain: Stain | None = Field(
        default=None, description="wright or nmb (nmb lets the smear say whether reticulocytes are "
        "absent); unset = unknown, as in `morph diagnose`",
    )
    cells: list[CellMeasureIn] | None = Field(
        default=None, max_length=1_000_000,
        description="the counted cells' measurements (label, kind, diameter_um, eccentricity), "
        "for the size findings; optional",
    )


class DiagnoseResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    findings: dict[str, Any]
    differentials: list[DifferentialOut]
    disclaimer: str


class ModelInfoOut(BaseModel):
    """The loaded model's card: name, version, labels, preprocessing, metrics, provenance."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str | None
    version: str | None = None


class LabelsOut(BaseModel):
    labels: list[str] = Field(description="every label a cell can get from the classifier")
    rbc: list[str]
    nucleated: list[str]
    marrow: list[str]
    special: dict[str, str] = Field(description="labels with a special meaning")
    kinds: list[str]
    colors: dict[str, str] = Field(description="the overlay colour of each label (#rrggbb)")


class DifferentialSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    summary: str | None = None


class DifferentialsOut(BaseModel):
    differentials: list[DifferentialSummary]


class HealthOut(BaseModel):
    status: str = Field(examples=["ok"])


class ReadyOut(BaseModel):
    status: str = Field(examples=["ready"])
    model: str | None = Field(default=None, description="the loaded classifier, or null (localization only)")


# -- the case store (/v1/cases) ------------------------------------------------------------------
class ReviewIn(BaseModel):
    """A reviewer's decision on one cell: a new label, or a confirmation of the current one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"label": "teardrop", "reviewer": "a.tech"},
                                        {"confirmed": True, "reviewer": "a.tech"}]},
    )

    label: str | None = Field(default=None, max_length=64, description="the correct label (GET /v1/labels)")
    confirmed: bool | None = Field(default=None, description="true: the cell's current label is right")
    reviewer: str = Field(min_length=1, max_length=200, description="who reviewed (kept in the audit trail)")


class CellReviewOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    case_id: str
    image_index: int
    cell_id: int
    label: str = Field(description="the reviewed label")
    model_label: str = Field(description="the label the model gave")
    confirmed: bool = Field(description="the reviewed label is the model's")
    reviewer: str
    at: str


class CaseSummaryOut(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    case_id: str
    created_at: str
    model: str | None = None
    images: list[str | None]
    n_cells: int
    status: str = Field(description="unreviewed | in_review | verified (every counted cell reviewed)")
    verified: bool
    reviewed_cells: int = Field(description="counted (non-border) cells a reviewer labelled or confirmed")
    counted_cells: int


class CaseListOut(BaseModel):
    cases: list[CaseSummaryOut] = Field(description="newest first")
    total: int
    limit: int
    offset: int


class AuditEntryOut(BaseModel):
    image_index: int
    cell_id: int
    reviewer: str
    at: str
    action: str = Field(description="relabel | confirm")
    old_label: str
    new_label: str


class CaseOut(CaseSummaryOut):
    report: dict[str, Any] = Field(description="the report as analysed; each cell has 'review' (null until reviewed)")
    audit: list[AuditEntryOut] = Field(description="every review of this case, oldest first (never overwritten)")


class VerifiedReportOut(CaseSummaryOut):
    changed_cells: int = Field(description="reviewed cells whose label differs from the model's")
    model_counts: dict[str, int] = Field(description="the counts as the model labelled them")
    counts: dict[str, int] = Field(description="counts with the reviewed labels")
    findings: dict[str, Any]
    differentials: list[DifferentialOut]
    disclaimer: str
