"""The analysis engine: image -> cells -> per-cell labels -> counts -> findings -> differentials.

The CLI (``morph analyze``), the service (``POST /v1/analyze``) and the batch
engine (``morph score``) build their analyzer with :func:`build_analyzer` and run a case
with :meth:`Analyzer.run_case`; none re-implements a step.

Model choices use one vocabulary everywhere (CLI ``--model``/``--localizer``, service
``MORPH_MODEL``/``MORPH_LOCALIZER``, batch options), read by :func:`model_choice`:
``shipped`` (default: the shipped folder, falling back, logged, when it is missing),
``none`` (no classifier: cells are localised only; no localizer: hand-made seeds), or a
model folder path or name under ``models/``; ``tiny`` builds an untrained tiny classifier
(tests, demos).
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
from .io import DEFAULT_LIMITS, ImageLimits, decode_image, read_image
from .segment import DEFAULT_UM_PER_PX, Segmentation, SegmentConfig, segment_field, share_case_scale
from .types import CaseReport, Cell, Classifier, FieldResult, Localizer

log = logging.getLogger(__name__)

DISCLAIMER = (
    "Decision support only, not a diagnosis. Findings come from an automated image model with "
    "known limits (see the model card); every result must be reviewed by a qualified person "
    "together with the full clinical picture."
)

#: The model-choice vocabulary (see the module docstring).
SHIPPED = "shipped"
NONE = "none"
TINY = "tiny"

#: One input of a case: a path, or ``(name, path | bytes | decoded RGB array)``.
FieldInput = str | os.PathLike[str] | tuple[str, "str | os.PathLike[str] | bytes | np.ndarray"]


def model_choice(value: str | os.PathLike[str] | None) -> str:
    """Normalise a model choice, mapping the older spellings onto the one vocabulary:
    unset, ``""`` and ``shipped`` -> ``shipped``; ``none`` and ``tiny`` in any case; any
    other value is a folder path or a name under ``models/``, kept as given."""
    text = "" if value is None else str(value).strip()
    if text.lower() in ("", SHIPPED, NONE, TINY):
        return text.lower() or SHIPPED
    return text


def load_classifier(choice: str | os.PathLike[str] | None = SHIPPED) -> Classifier | None:
    """The classifier a model choice names; ``None`` localises only. A missing shipped
    model falls back to localization only (logged); a named one that is missing raises."""
    from .classify import build_untrained, load_model

    name = model_choice(choice)
    if name == NONE:
        return None
    if name == TINY:
        return build_untrained("morphnet_tiny")
    if name != SHIPPED:
        return load_model(name)
    try:
        return load_model(None)
    except MorphError as exc:
        if exc.code != "model_not_found":
            raise
        log.warning("%s; cells are localised only", exc)
        return None


def load_localizer(choice: str | os.PathLike[str] | None = SHIPPED) -> Localizer | None:
    """The centre-map localizer a model choice names; ``None`` means the hand-made seeds."""
    name = model_choice(choice)
    if name == NONE:
        return None
    if name == SHIPPED:
        return shipped_localizer()
    if name == TINY:
        raise MorphError("bad_request", "'tiny' names a test classifier, not a localizer; use "
                         "shipped, none or a localizer folder", path="localizer")
    from .localize import load_localizer as load_folder

    return load_folder(name)


@lru_cache(maxsize=1)
def shipped_localizer() -> Localizer | None:
    """The shipped centre-map localizer (``models/locnet-v6``), loaded once; ``None`` (hand-made
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


def case_scale(fields: Sequence[FieldResult], options: AnalysisOptions) -> dict[str, Any]:
    """The scale a case's sizes were measured at, for its findings: the stated one, or the default
    one, or (no scale stated, the default implausible on some fields) the estimated ones."""
    if options.um_per_px is not None:
        return {"um_per_px": float(options.um_per_px), "source": "stated"}
    estimated = [f for f in fields if f.error is None and f.scale_source == "estimated"]
    if not estimated:
        # said in the report: on another lab's microscope the default may be wrong while the
        # cells still measure plausibly (bcd-256 cells read 8.8-9.4 um at it: "macrocytes")
        um = options.resolved_um_per_px()
        return {"um_per_px": um, "source": "default",
                "note": f"no scale was given: sizes were measured at the default {um:g} um/px (the Chula RBC-12 "
                        "microscope); macro- and microcytes, macro-ovalocytes and anisocytosis hold only if that is "
                        "this microscope's scale: give um_per_px"}
    return {
        "um_per_px": round(float(np.median([f.um_per_px for f in estimated])), 4), "source": "estimated",
        "fields_estimated": len(estimated),
        "note": "no scale was given and the default one made the median red cell implausible: the scale of "
                f"{len(estimated)} field(s) was estimated from their red cells (the fields that agree share "
                "one, from their cells pooled: one microscope), so cell sizes there are relative and macro- or "
                "microcytosis cannot be judged; give um_per_px",
    }


def count_cells(fields: Iterable[FieldResult]) -> dict[str, int]:
    """Per-label counts over a case, excluding cells cut by the image border."""
    counts: Counter[str] = Counter()
    for f in fields:
        for c in f.cells:
            if not c.touches_border:
                counts[c.label] += 1
    return dict(sorted(counts.items()))


#: a field of a case once localised (name, image, segmentation), or its failed result
Located = tuple[str, np.ndarray, Segmentation] | FieldResult


class Analyzer:
    """Runs the whole pipeline with one loaded classifier (or none).

    Args:
        classifier: a loaded :class:`morph.classify.CellClassifier`, or ``None`` to
            localise only (every cell ``"unclassified"``).
        segment_config: localization settings (each field is localised with
            ``segment_config.for_stain(stain)``: the stain's own settings in place of these).
        localizer: the learned red-cell centre map seeding the localizer
            (:class:`morph.localize.CentreDetector`), ``None`` for the hand-made seeds, or a
            model choice (``"shipped"``, the default, loads ``models/locnet-v6`` when it is there).
    """

    def __init__(
        self, classifier: Classifier | None = None, segment_config: SegmentConfig | None = None,
        localizer: Localizer | str | None = SHIPPED,
    ):
        self.classifier = classifier
        self.segment_config = segment_config or SegmentConfig()
        self.localizer = load_localizer(localizer) if isinstance(localizer, str) else localizer

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
        """One field on its own (a case of one: its scale is its own)."""
        return self._classified(image, path, self._localised(image, options), options)

    def _config(self, options: AnalysisOptions) -> SegmentConfig:
        """The localization settings for the case's stain (NMB reads chromatin as blue, not violet)."""
        return self.segment_config.for_stain(options.stain)

    def _localised(self, image: np.ndarray, options: AnalysisOptions) -> Segmentation:
        return segment_field(image, um_per_px=options.resolved_um_per_px(), config=self._config(options),
                             centres=self.localizer, scale_stated=options.um_per_px is not None)

    def _classified(self, image: np.ndarray, path: str, seg: Segmentation, options: AnalysisOptions) -> FieldResult:
        h, w = image.shape[:2]
        um = seg.um_per_px  # the classifier reads sizes at the field's scale, estimated or not
        cells: list[Cell] = seg.cells
        if self.classifier is not None and cells:
            self.classifier.classify_cells(image, cells, um_per_px=um, stain=options.stain)
        med_um = seg.median_rbc_diameter_px * um if seg.median_rbc_diameter_px else None
        return FieldResult(
            path=path, width=w, height=h, um_per_px=um, median_rbc_diameter_um=med_um,
            cells=cells, warnings=list(seg.warnings), scale_source=seg.scale_source,
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
        warnings: list[str] = []
        # every field is localised first: with no scale stated, the case's fields share one scale
        # (one microscope), decided on their red cells pooled, before any cell is classified
        located = self._localised_all(inputs, options, warnings)
        if options.um_per_px is None:
            located = self._with_shared_scale(located, options)
        fields = self._classified_all(located, options, warnings)
        counts = count_cells(fields)
        findings, differentials = self.diagnose(counts, fields, options)
        ok = [f for f in fields if f.error is None]
        if not ok:
            warnings.append("no field of this case could be analysed")
        return CaseReport(
            model=self.model_info(), images=fields, counts=counts, findings=findings,
            differentials=differentials, warnings=warnings, disclaimer=DISCLAIMER,
        )

    def _localised_all(self, inputs: Sequence[tuple[str, np.ndarray | MorphError]], options: AnalysisOptions,
                       warnings: list[str]) -> list[Located]:
        """Each field localised, or (unreadable, or failing) its failed result, named in ``warnings``."""
        located: list[Located] = []
        for name, item in inputs:
            try:
                if isinstance(item, MorphError):
                    raise item
                located.append((name, item, self._localised(item, options)))
            except MorphError as exc:
                located.append(_failed_field(name, options.resolved_um_per_px(), exc))
                warnings.append(str(exc))
        return located

    def _classified_all(self, located: list[Located], options: AnalysisOptions, warnings: list[str]) -> list[FieldResult]:
        """Each localised field's cells classified; a failure is reported and the rest go on."""
        fields: list[FieldResult] = []
        for entry in located:
            if isinstance(entry, FieldResult):
                fields.append(entry)
                continue
            name, image, seg = entry
            try:
                fields.append(self._classified(image, name, seg, options))
            except MorphError as exc:
                fields.append(_failed_field(name, options.resolved_um_per_px(), exc))
                warnings.append(str(exc))
        return fields

    def _with_shared_scale(self, located: list[Located], options: AnalysisOptions) -> list[Located]:
        """``located`` with its localised fields at the scale their case shares."""
        ok = [e for e in located if not isinstance(e, FieldResult)]
        shared = iter(share_case_scale([seg for _, _, seg in ok], options.resolved_um_per_px(), self._config(options)))
        return [e if isinstance(e, FieldResult) else (e[0], e[1], next(shared)) for e in located]

    def run_case(
        self, inputs: Sequence[FieldInput], options: AnalysisOptions | None = None, overlays: bool = False,
        *, legend: bool = True,
    ) -> CaseResult:
        """Read a case's inputs and analyse them: the one entry point of the CLI, the service
        and the batch engine.

        Each input is a path or ``(name, path | bytes | RGB array)``; the report names it by
        ``name``. A field that cannot be read is reported in the case (its error names it)
        and the others are still analysed. With ``overlays``, every analysed field's picture
        (cells outlined in their label colours, with a legend unless ``legend=False``) comes
        back in :attr:`CaseResult.overlays`, aligned with the report's images.
        """
        options = (options or AnalysisOptions()).validate()
        named = [_read_input(item, options) for item in inputs]
        report = self.analyze_case(named, options)
        pictures: list[np.ndarray | None] = []
        if overlays:
            from .overlay import render_overlay

            for (_, image), f in zip(named, report.images, strict=True):
                if f.error is None and isinstance(image, np.ndarray):
                    pictures.append(render_overlay(image, f, legend=legend))
                else:
                    pictures.append(None)
        return CaseResult(report, pictures)

    # -- findings and differentials ---------------------------------------------------------
    def diagnose(
        self, counts: dict[str, int], fields: Sequence[FieldResult], options: AnalysisOptions
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from .differentials import diagnose

        cells = [  # "field" lets the findings weigh fields that disagree and count fields needed
            {"label": c.label, "kind": c.kind, "diameter_um": c.diameter_um, "eccentricity": c.eccentricity,
             "field": f.path}
            for f in fields
            for c in f.cells
            if not c.touches_border
        ]
        return diagnose(counts, scale=case_scale(fields, options), context=options.context, cells=cells,
                        stain=options.stain)


@dataclass(frozen=True)
class CaseResult:
    """What :meth:`Analyzer.run_case` returns: the report and, when asked, one overlay
    picture per field of ``report.images`` (``None`` for a field that failed)."""

    report: CaseReport
    overlays: list[np.ndarray | None] = field(default_factory=list)


def build_analyzer(
    model: str | os.PathLike[str] | None = SHIPPED, localizer: str | os.PathLike[str] | None = SHIPPED,
    segment_config: SegmentConfig | None = None,
) -> Analyzer:
    """The analyzer two model choices name (see :func:`model_choice`)."""
    return Analyzer(classifier=load_classifier(model), segment_config=segment_config,
                    localizer=load_localizer(localizer))


def _read_input(item: FieldInput, options: AnalysisOptions) -> tuple[str, np.ndarray | MorphError]:
    """One case input -> ``(name, decoded image | the error naming it)``."""
    name, source = (item if isinstance(item, tuple) else (str(item), item))
    try:
        if isinstance(source, np.ndarray):
            return name, source
        if isinstance(source, bytes | bytearray | memoryview):
            return name, decode_image(bytes(source), name=name, limits=options.limits)
        return name, read_image(source, options.limits)
    except MorphError as exc:
        return name, exc if exc.path == name else MorphError(exc.code, exc.message, path=name, detail=exc.detail)


def _failed_field(name: str, um: float, exc: MorphError) -> FieldResult:
    return FieldResult(
        path=name, width=0, height=0, um_per_px=um, median_rbc_diameter_um=None,
        warnings=[str(exc)], error=exc.to_dict(),
    )


def with_options(options: AnalysisOptions, **changes: Any) -> AnalysisOptions:
    return replace(options, **changes)
