"""Typed results that flow through the pipeline: image -> cells -> report.

These are the library's internal dataclasses; the service has its own pydantic
schemas and converts with :meth:`to_dict`. The JSON shape is a public contract
(``morph analyze --json``, ``POST /v1/analyze``, batch ``cases/*.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .labels import UNCLASSIFIED


@dataclass
class Cell:
    """One located cell in one field.

    Coordinates are in pixels of the (EXIF-corrected) image; ``bbox`` is
    ``(x0, y0, x1, y1)`` with exclusive ends. ``mask`` is the boolean cell mask
    cropped to ``bbox`` (not serialised); ``touches_border`` flags cells cut by
    the image edge, which are kept (flagged) but not counted in findings.
    """

    id: int
    x: float
    y: float
    bbox: tuple[int, int, int, int]
    kind: str  # "rbc" | "nucleated" | "platelet"
    area_px: float
    diameter_px: float
    eccentricity: float
    touches_border: bool = False
    label: str = UNCLASSIFIED
    confidence: float = 0.0
    diameter_um: float | None = None
    top_labels: list[tuple[str, float]] = field(default_factory=list)
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "x": round(float(self.x), 1),
            "y": round(float(self.y), 1),
            "bbox": [int(v) for v in self.bbox],
            "kind": self.kind,
            "label": self.label,
            "confidence": round(float(self.confidence), 4),
            "area_px": round(float(self.area_px), 1),
            "diameter_px": round(float(self.diameter_px), 2),
            "diameter_um": None if self.diameter_um is None else round(float(self.diameter_um), 2),
            "eccentricity": round(float(self.eccentricity), 3),
            "touches_border": bool(self.touches_border),
        }
        if self.top_labels:
            out["top_labels"] = [[k, round(float(v), 4)] for k, v in self.top_labels]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        """A cell back from :meth:`to_dict` (a stored report); the mask is not kept."""
        return cls(
            id=int(d["id"]), x=float(d["x"]), y=float(d["y"]), bbox=tuple(int(v) for v in d["bbox"]),  # type: ignore[arg-type]
            kind=str(d["kind"]), area_px=float(d["area_px"]), diameter_px=float(d["diameter_px"]),
            eccentricity=float(d["eccentricity"]), touches_border=bool(d["touches_border"]),
            label=str(d["label"]), confidence=float(d["confidence"]), diameter_um=d.get("diameter_um"),
            top_labels=[(str(k), float(v)) for k, v in d.get("top_labels") or []],
        )


@dataclass
class FieldResult:
    """Everything found in one image (field) of a case."""

    path: str
    width: int
    height: int
    um_per_px: float
    median_rbc_diameter_um: float | None
    cells: list[Cell] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None  # set when this field could not be analysed
    #: where ``um_per_px`` came from: "stated", "default" or "estimated" (from the cells, when no
    #: scale was stated and the default one made the median red cell implausible).
    scale_source: str = "stated"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "um_per_px": self.um_per_px,
            "scale_source": self.scale_source,
            "median_rbc_diameter_um": None
            if self.median_rbc_diameter_um is None
            else round(float(self.median_rbc_diameter_um), 2),
            "warnings": list(self.warnings),
            "cells": [c.to_dict() for c in self.cells],
        }
        if self.error is not None:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FieldResult:
        """A field back from :meth:`to_dict` (a stored report)."""
        return cls(
            path=str(d["path"]), width=int(d["width"]), height=int(d["height"]), um_per_px=float(d["um_per_px"]),
            median_rbc_diameter_um=d.get("median_rbc_diameter_um"),
            cells=[Cell.from_dict(c) for c in d.get("cells") or []], warnings=list(d.get("warnings") or []),
            error=d.get("error"), scale_source=str(d.get("scale_source", "stated")),
        )


@dataclass
class CaseReport:
    """A whole case: one or more fields, counts, findings and differentials."""

    model: dict[str, Any]
    images: list[FieldResult]
    counts: dict[str, int]
    findings: dict[str, Any] = field(default_factory=dict)
    differentials: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    disclaimer: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "images": [im.to_dict() for im in self.images],
            "counts": dict(self.counts),
            "findings": self.findings,
            "differentials": self.differentials,
            "warnings": list(self.warnings),
            "disclaimer": self.disclaimer,
        }


# ------------------------------------------------------------------------------------------
# what the pipeline needs of its models (structural types: any object with these methods)
# ------------------------------------------------------------------------------------------
class CentreMap(Protocol):
    """What :func:`morph.segment.segment_field` needs of a learned centre map: working-scale
    optical density ``(h, w, 3)`` -> centre probability per working pixel, one ``(h, w)`` map
    per cell kind (``"rbc"`` required; ``"nucleated"``, ``"platelet"`` optional) or a bare
    ``(h, w)`` red-cell map. Optional attributes ``thresholds`` (peak threshold per kind) and
    ``min_distance`` (red-cell seed spacing, units of the typical radius) set the peak rules;
    :class:`morph.localize.CentreDetector` has both."""

    def __call__(self, od: np.ndarray, /) -> Mapping[str, np.ndarray] | np.ndarray: ...


class Localizer(CentreMap, Protocol):
    """What :class:`morph.pipeline.Analyzer` needs of a localizer: a centre map that can
    describe itself for the report (:class:`morph.localize.CentreDetector`)."""

    def info(self) -> dict[str, Any]: ...


class Classifier(Protocol):
    """What :class:`morph.pipeline.Analyzer` needs of a cell classifier
    (:class:`morph.classify.CellClassifier`): label the cells of one field in place, and
    describe itself for the report."""

    def info(self) -> dict[str, Any]: ...

    def classify_cells(self, image: np.ndarray, cells: list[Cell], um_per_px: float,
                       stain: str = "wright") -> None: ...
