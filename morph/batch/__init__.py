"""Batch scoring of whole folders of cases: resumable, parallel, deterministic.

The engine behind ``morph score``. It

1. **discovers** the cases under an input folder (:func:`discover_cases`): in
   ``"subfolder"`` mode every folder that directly holds images is one case and loose
   images at the top level are one-image cases; in ``"image"`` mode every image is a case.
   Files that cannot be scored (non-images, broken or looping symbolic links, unreadable
   folders) are recorded as :class:`InputError` rows, never silently dropped;
2. **fingerprints** each case (:func:`case_fingerprint`): the SHA-256 of every input
   file plus everything that changes the report (options, clinical context, model
   weights, morph version);
3. **skips** cases whose ``cases/<case>.json`` already holds the same fingerprint
   (resume), and scores the rest with one :class:`~morph.pipeline.Analyzer` per worker
   process (model loaded once per worker) or per Ray actor (:mod:`morph.batch.ray_engine`);
4. writes each case report atomically as soon as it is done, then **regenerates**
   ``cells.csv``, ``cases.csv``, ``errors.csv`` and ``run.json`` from the case files,
   sorted, so a run killed at any moment and restarted ends with exactly the outputs
   of an uninterrupted run.

Library code: progress is reported through a callback (:class:`BatchProgress` events),
never printed.

One module per step, imported one way (options <- discovery, fingerprint, scoring <-
local, ray_engine <- run; outputs <- run): :mod:`~morph.batch.options` (options, inputs,
results), :mod:`~morph.batch.discovery` (cases and context rows),
:mod:`~morph.batch.fingerprint`, :mod:`~morph.batch.scoring` (one case through
:meth:`morph.pipeline.Analyzer.run_case`), :mod:`~morph.batch.local` and
:mod:`~morph.batch.ray_engine` (engines), :mod:`~morph.batch.outputs` (every file written)
and :mod:`~morph.batch.run` (:func:`run_batch`).
"""

from __future__ import annotations

from .discovery import discover_cases, load_context_csv
from .fingerprint import case_fingerprint, model_fingerprint
from .local import run_local, warm_up
from .options import (
    CASE_MODES,
    ENGINES,
    FORMAT_VERSION,
    BatchOptions,
    BatchProgress,
    BatchSummary,
    CaseOutcome,
    CaseSpec,
    CaseTask,
    Discovery,
    ImageInput,
    InputError,
    ModelLoader,
)
from .outputs import (
    CASES_COLUMNS,
    CELLS_COLUMNS,
    COUNT_LABELS,
    ERRORS_COLUMNS,
    case_json_path,
    overlay_path,
)
from .run import run_batch
from .scoring import CaseScorer, single_thread_torch

__all__ = [
    "CASES_COLUMNS", "CASE_MODES", "CELLS_COLUMNS", "COUNT_LABELS", "ENGINES", "ERRORS_COLUMNS",
    "FORMAT_VERSION", "BatchOptions", "BatchProgress", "BatchSummary", "CaseOutcome", "CaseScorer",
    "CaseSpec", "CaseTask", "Discovery", "ImageInput", "InputError", "ModelLoader", "case_fingerprint",
    "case_json_path", "discover_cases", "load_context_csv", "model_fingerprint", "overlay_path",
    "run_batch", "run_local", "single_thread_torch", "warm_up",
]
