"""The analysis engine: image -> cells -> per-cell labels -> counts -> findings -> differentials.

The CLI (``morph analyze``), the service (``POST /v1/analyze``) and the batch
engine (``morph score``) all call :class:`Analyzer`; none re-implements a step.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from .context import check_stain, check_um_per_px
from .errors import MorphError
from .io import DEFAULT_LIMITS, ImageLimits, read_image
from .segment import DEFAULT_UM_PER_PX, SegmentConfig, segment_field
from .types import CaseReport, Cell, FieldResult

log = logging.getLogger(__name__)

DISCLAIMER = (
    "Decision support only, not a diagnosis. Findings come from an automated image model with "
    "known limits (see the model card); every result must be reviewed by a qualified person "
    "together with the full clinical picture."
)

#: ``Analyzer(localizer=SHIPPED)``: the shipped localizer folder, when present.
SHIPPED = "shipped"


@lru_cache(maxsize=1)
def shipped_localizer() -> Any:
    """The shipped centre-map localizer (``models/locnet-v1``), loaded once; ``None`` (hand-made
    seeds, logged) when the folder is missing or unreadable."""
    from .localize import load_localizer

    try:
        return load_localizer(None)
    except MorphError as exc:
        log.warning("localizer: %s; using the hand-made seeds", exc.message)
        return None


@dataclass(frozen=True)
class AnalysisOptions:
    """Per-case options. ``um_per_px=None`` means the default (Chula) scale."""

    um_per_px: float | None = None
    stain: str = "wright"
    context: dict[str, Any] | None = None
    limits: ImageLimits = field(default_factory=lambda: DEFAULT_LIMITS)

    def resolved_um_per_px(self) -> float:
        return float(self.um_per_px) if self.um_per_px else DEFAULT_UM_PER_PX

    def validate(self) -> AnalysisOptions:
        check_stain(self.stain)
        check_um_per_px(self.um_per_px)
        return self


def count_cells(fields: Iterable[FieldResult]) -> dict[str, int]:
    """Per-label counts over a case, excluding cells cut by the image border."""
    counts: Counter[str] = Counter()
    for f in fields:
        for c in f.cells:
            if not c.touches_border:
                counts[c.label] += 1
    return dict(sorted(counts.items()))


class Analyzer:
    """Runs the whole pipeline with one loaded classifier (or none).

    Args:
        classifier: a loaded :class:`morph.classify.CellClassifier`, or ``None`` to
            localise only (every cell ``"unclassified"``).
        segment_config: localization settings.
        localizer: the learned red-cell centre map seeding the localizer
            (:class:`morph.localize.CentreDetector`); ``"shipped"`` (default) loads
            ``models/locnet-v1`` when it is there, ``None`` uses the hand-made seeds.
    """

    def __init__(
        self, classifier: Any | None = None, segment_config: SegmentConfig | None = None,
        localizer: Any = SHIPPED,
    ):
        self.classifier = classifier
        self.segment_config = segment_config or SegmentConfig()
        self.localizer = shipped_localizer() if isinstance(localizer, str) and localizer == SHIPPED else localizer

    # -- model info -------------------------------------------------------------------------
    def model_info(self) -> dict[str, Any]:
        if self.classifier is None:
            info: dict[str, Any] = {"name": None, "version": None, "note": "localization only; no classifier loaded"}
        else:
            info = dict(self.classifier.info())
        info["localizer"] = self.localizer.info() if self.localizer is not None else {"name": "hand-made seeds"}
        return info

    # -- one field --------------------------------------------------------------------------
    def analyze_field(self, image: np.ndarray, path: str, options: AnalysisOptions) -> FieldResult:
        um = options.resolved_um_per_px()
        h, w = image.shape[:2]
        seg = segment_field(image, um_per_px=um, config=self.segment_config, centres=self.localizer)
        cells: list[Cell] = seg.cells
        if self.classifier is not None and cells:
            self.classifier.classify_cells(image, cells, um_per_px=um, stain=options.stain)
        med_um = seg.median_rbc_diameter_px * um if seg.median_rbc_diameter_px else None
        return FieldResult(
            path=path, width=w, height=h, um_per_px=um, median_rbc_diameter_um=med_um,
            cells=cells, warnings=list(seg.warnings),
        )

    # -- a case -----------------------------------------------------------------------------
    def analyze_case(
        self,
        inputs: Sequence[tuple[str, np.ndarray | MorphError]],
        options: AnalysisOptions | None = None,
    ) -> CaseReport:
        """Analyse one case made of several fields.

        ``inputs`` pairs each field's name with its decoded image, or with the
        :class:`MorphError` raised when reading it: a bad field is reported in the
        case and the others are still analysed.
        """
        options = (options or AnalysisOptions()).validate()
        fields: list[FieldResult] = []
        warnings: list[str] = []
        um = options.resolved_um_per_px()
        for name, item in inputs:
            if isinstance(item, MorphError):
                fields.append(_failed_field(name, um, item))
                warnings.append(str(item))
                continue
            try:
                fields.append(self.analyze_field(item, name, options))
            except MorphError as exc:
                fields.append(_failed_field(name, um, exc))
                warnings.append(str(exc))
        counts = count_cells(fields)
        findings, differentials = self.diagnose(counts, fields, options)
        ok = [f for f in fields if f.error is None]
        if not ok:
            warnings.append("no field of this case could be analysed")
        return CaseReport(
            model=self.model_info(), images=fields, counts=counts, findings=findings,
            differentials=differentials, warnings=warnings, disclaimer=DISCLAIMER,
        )

    def analyze_paths(
        self, paths: Sequence[str | os.PathLike[str]], options: AnalysisOptions | None = None
    ) -> CaseReport:
        """Read each path (errors kept per field) and analyse them as one case."""
        options = options or AnalysisOptions()
        inputs: list[tuple[str, np.ndarray | MorphError]] = []
        for p in paths:
            try:
                inputs.append((str(p), read_image(p, options.limits)))
            except MorphError as exc:
                inputs.append((str(p), exc))
        return self.analyze_case(inputs, options)

    # -- findings and differentials ---------------------------------------------------------
    def diagnose(
        self, counts: dict[str, int], fields: Sequence[FieldResult], options: AnalysisOptions
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        try:
            from .differentials import diagnose
        except ImportError:  # pragma: no cover - until the findings engine lands
            return {}, []
        cells = [
            {"label": c.label, "kind": c.kind, "diameter_um": c.diameter_um, "eccentricity": c.eccentricity}
            for f in fields
            for c in f.cells
            if not c.touches_border
        ]
        return diagnose(
            counts, um_per_px=options.resolved_um_per_px(), context=options.context, cells=cells,
            stain=options.stain,
        )


def _failed_field(name: str, um: float, exc: MorphError) -> FieldResult:
    return FieldResult(
        path=name, width=0, height=0, um_per_px=um, median_rbc_diameter_um=None,
        warnings=[str(exc)], error=exc.to_dict(),
    )


def with_options(options: AnalysisOptions, **changes: Any) -> AnalysisOptions:
    return replace(options, **changes)
