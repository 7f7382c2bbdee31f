"""Options, inputs and results of a batch run (plain, picklable dataclasses)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MorphError
from ..pipeline import SHIPPED, AnalysisOptions

CASE_MODES: tuple[str, ...] = ("subfolder", "image")
ENGINES: tuple[str, ...] = ("local", "ray")
#: Version of the case-file layout; part of every fingerprint.
FORMAT_VERSION = 1

ModelLoader = Callable[[], Any]


@dataclass(frozen=True)
class BatchOptions:
    """How a batch run groups, scores and parallelises.

    ``workers``: processes (``None`` = all cores; ``0`` = score in this process, for
    debugging). ``batch_size``: cases handed to a worker at a time (Ray: cases per
    ``map_batches`` batch). ``force``: rescore cases even when their output is current.
    ``model`` and ``localizer``: model choices (:func:`morph.pipeline.model_choice`).
    """

    case_mode: str = "subfolder"
    um_per_px: float | None = None
    stain: str = "wright"
    context_file: str | None = None
    overlays: bool = False
    workers: int | None = None
    batch_size: int = 1
    force: bool = False
    engine: str = "local"
    ray_address: str | None = None
    model: str = SHIPPED
    localizer: str = SHIPPED

    def resolved_workers(self) -> int:
        return _usable_cores() if self.workers is None else int(self.workers)

    def validate(self) -> BatchOptions:
        if self.case_mode not in CASE_MODES:
            raise MorphError("bad_request", f"unknown case mode {self.case_mode!r}; use {' or '.join(CASE_MODES)}",
                             path="case_mode")
        if self.engine not in ENGINES:
            raise MorphError("bad_request", f"unknown engine {self.engine!r}; use {' or '.join(ENGINES)}",
                             path="engine")
        if self.workers is not None and self.workers < 0:
            raise MorphError("bad_request", f"workers must be >= 0, got {self.workers}", path="workers")
        if self.batch_size < 1:
            raise MorphError("bad_request", f"batch size must be >= 1, got {self.batch_size}", path="batch_size")
        AnalysisOptions(um_per_px=self.um_per_px, stain=self.stain).validate()
        return self


@dataclass(frozen=True)
class InputError:
    """One row of ``errors.csv``: a file (or folder) that was not scored, and why."""

    file: str
    code: str
    message: str

    @classmethod
    def from_exc(cls, exc: MorphError, file: str | None = None) -> InputError:
        return cls(file or exc.path or "", exc.code, exc.message)


@dataclass(frozen=True)
class ImageInput:
    """One field image: its path relative to the input folder (POSIX) and as reported."""

    rel: str
    path: str  # INPUT_DIR joined with rel, as written in reports and CSVs


@dataclass
class CaseSpec:
    """A case found under the input folder: an id (its relative path) and its images."""

    case_id: str
    images: list[ImageInput]


@dataclass
class Discovery:
    cases: list[CaseSpec] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)


@dataclass(frozen=True)
class CaseTask:
    """Everything a worker needs to score one case (picklable, no open resources)."""

    case_id: str
    images: tuple[tuple[str, str, str], ...]  # (rel, reported path, absolute path to read)
    options: AnalysisOptions
    overlays: bool = False


@dataclass
class CaseOutcome:
    """What a worker sends back for one case."""

    case_id: str
    report: dict[str, Any] | None
    overlays: dict[str, bytes] = field(default_factory=dict)  # rel image path -> PNG bytes
    error: InputError | None = None
    seconds: float = 0.0

    @property
    def n_images(self) -> int:
        return len(self.report["images"]) if self.report else 0

    @property
    def n_cells(self) -> int:
        return report_cells(self.report) if self.report else 0


@dataclass(frozen=True)
class BatchProgress:
    """A progress event. ``kind``: ``"start"`` (totals known), ``"case"`` (one case
    scored), ``"finish"`` (outputs written)."""

    kind: str
    cases_total: int = 0
    cases_todo: int = 0
    images_todo: int = 0
    case_id: str | None = None
    images: int = 0
    cells: int = 0
    failed: bool = False


@dataclass
class BatchSummary:
    """The outcome of :func:`run_batch` (also written, without timings, to ``run.json``)."""

    out_dir: Path
    cases: int
    cases_ok: int
    cases_partial: int
    cases_failed: int
    images_ok: int
    images_failed: int
    files_not_scored: int
    cells: int  # every located cell (rows of cells.csv)
    cells_counted: int  # cells not cut by the border (what the counts and findings use)
    errors: int
    scored: int  # cases scored by this run
    skipped: int  # cases left as they were (same fingerprint)
    images_scored: int  # images scored by this run
    cells_scored: int
    seconds: float
    duplicates: list[list[str]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images_scored / self.seconds if self.seconds > 0 else 0.0

    @property
    def cells_per_s(self) -> float:
        return self.cells_scored / self.seconds if self.seconds > 0 else 0.0


@dataclass
class PlannedCase:
    """A case of this run: its fingerprint and task, or the error known before scoring."""

    spec: CaseSpec
    fingerprint: str | None = None
    task: CaseTask | None = None
    error: InputError | None = None  # a case-level error known before scoring (context)
    status: str = "todo"  # todo | skipped | error


def _usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def report_cells(report: dict[str, Any]) -> int:
    """Every located cell of a report (border cells included)."""
    return sum(len(im.get("cells", ())) for im in report.get("images", ()))

