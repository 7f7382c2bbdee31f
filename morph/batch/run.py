"""A whole run: discover, fingerprint, skip what is current, score the rest, write the tables."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import MorphError
from ..io import remove_stale_temp_files, write_bytes_atomic, write_json
from ..pipeline import AnalysisOptions, load_classifier, load_localizer
from .discovery import discover_cases, join_rel, load_context_csv
from .fingerprint import case_fingerprint, hash_input, model_fingerprint, morph_version
from .local import run_local, warm_up
from .options import (
    BatchOptions,
    BatchProgress,
    BatchSummary,
    CaseOutcome,
    CaseTask,
    Discovery,
    InputError,
    ModelLoader,
    PlannedCase,
)
from .outputs import batch_block, case_json_path, is_current, overlay_path, write_tables

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class _Plan:
    """What a run knows before scoring: the cases (with their fate) and the run's inputs."""

    discovery: Discovery
    planned: list[PlannedCase]
    duplicates: list[list[str]]
    unused_context_rows: list[str]

    @property
    def todo(self) -> list[PlannedCase]:
        return [pl for pl in self.planned if pl.status == "todo"]


@dataclass
class _Tally:
    """What this invocation scored."""

    images: int = 0
    cells: int = 0
    ok: int = 0
    failed: int = 0
    errors: dict[str, InputError] = field(default_factory=dict)


def run_batch(
    input_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: BatchOptions | None = None,
    model_loader: ModelLoader | None = None,
    *,
    classifier: Any | None = None,
    progress: Callable[[BatchProgress], None] | None = None,
) -> BatchSummary:
    """Score every case under ``input_dir`` into ``out_dir`` (see :mod:`morph.batch`).

    Args:
        model_loader: a picklable no-argument callable returning the classifier (for
            example ``functools.partial(morph.classify.load_model, "morphnet-v1")``); each
            worker calls it once. ``None``: the classifier ``options.model`` names.
        classifier: the same model already loaded here (saves loading it again in this
            process for its fingerprint); optional.
        progress: called with :class:`BatchProgress` events.

    Raises :class:`MorphError` for usage errors (missing input folder, bad options,
    unreadable context file); bad inputs never raise, they are rows of ``errors.csv``.
    """
    options = (options or BatchOptions()).validate()
    t_start, started = time.perf_counter(), _now()
    emit = progress or (lambda _e: None)
    input_s, out = str(input_dir), Path(out_dir)
    contexts, discovery = _discover(input_dir, out, options)
    warm_up(options)
    if model_loader is None:
        model_loader = functools.partial(load_classifier, options.model)
    if classifier is None:
        classifier = model_loader()
    model_fp = model_fingerprint(classifier)
    model_fp["localizer"] = model_fingerprint(load_localizer(options.localizer))  # its seeds shape every report
    out.mkdir(parents=True, exist_ok=True)
    for p in remove_stale_temp_files(out):
        log.info("removed a temp file left by a killed run: %s", p)
    plan = _plan(discovery, contexts, input_s, out, options, model_fp)
    todo = plan.todo
    emit(BatchProgress("start", cases_total=len(plan.planned), cases_todo=len(todo),
                       images_todo=sum(len(pl.spec.images) for pl in todo)))
    tasks = [pl.task for pl in todo if pl.task is not None]
    outcomes = _engine(tasks, model_loader, classifier, options)
    tally = _write_outcomes(outcomes, plan, input_s, out, emit)
    summary = write_tables(out, plan.planned, discovery, tally.errors, plan.duplicates)
    summary.scored, summary.skipped = len(todo), sum(pl.status == "skipped" for pl in plan.planned)
    summary.images_scored, summary.cells_scored = tally.images, tally.cells
    summary.seconds = time.perf_counter() - t_start
    write_json(out / "run.json", _run_doc(summary, plan, tally, options, model_fp, input_s, started))
    emit(BatchProgress("finish", cases_total=len(plan.planned)))
    return summary


def _discover(
    input_dir: str | os.PathLike[str], out: Path, options: BatchOptions
) -> tuple[dict[str, dict[str, Any] | MorphError], Discovery]:
    """The context rows and the cases (the output folder and the context file excluded)."""
    exclude: list[str | os.PathLike[str]] = [out]
    contexts: dict[str, dict[str, Any] | MorphError] = {}
    if options.context_file:
        contexts = load_context_csv(options.context_file)
        exclude.append(options.context_file)
    discovery = discover_cases(input_dir, options.case_mode, exclude=exclude)
    if not discovery.cases and not discovery.errors:
        raise MorphError("bad_request", "no images found in the input folder", path=str(input_dir))
    return contexts, discovery


def _plan(
    discovery: Discovery,
    contexts: dict[str, dict[str, Any] | MorphError],
    input_s: str,
    out: Path,
    options: BatchOptions,
    model_fp: dict[str, Any],
) -> _Plan:
    """Fingerprint every case and decide what to score (todo), skip (current) or fail (context)."""
    unused = sorted(set(contexts) - {c.case_id for c in discovery.cases})
    for cid in unused:
        log.warning("the context file has a row for %r, which is not a case of this run", cid)
    planned: list[PlannedCase] = []
    by_hash: dict[str, list[str]] = {}
    for spec in discovery.cases:
        pl = PlannedCase(spec)
        planned.append(pl)
        hashes = [(im.rel, hash_input(join_rel(input_s, im.rel))) for im in spec.images]
        for (_rel, h), im in zip(hashes, spec.images, strict=True):
            if not h.startswith("unreadable:"):
                by_hash.setdefault(h, []).append(im.path)
        ctx = contexts.get(spec.case_id)
        if isinstance(ctx, MorphError):
            pl.error, pl.status = InputError.from_exc(ctx), "error"
            stale = case_json_path(out, spec.case_id)
            if stale.is_file():  # an earlier run scored it with a context that is now invalid
                stale.unlink()
            continue
        opts = AnalysisOptions(um_per_px=options.um_per_px, stain=options.stain, context=ctx)
        pl.fingerprint = case_fingerprint(spec.case_id, input_s, hashes, opts, model_fp)
        pl.task = CaseTask(
            spec.case_id,
            tuple((im.rel, im.path, os.path.abspath(join_rel(input_s, im.rel))) for im in spec.images),
            opts,
            options.overlays,
        )
        if not options.force and is_current(out, pl, options.overlays):
            pl.status = "skipped"
    duplicates = sorted(sorted(v) for v in by_hash.values() if len(v) > 1)
    for group in duplicates:
        log.warning("duplicate files (same content, each scored): %s", ", ".join(group))
    return _Plan(discovery, planned, duplicates, unused)


def _engine(
    tasks: list[CaseTask], model_loader: ModelLoader, classifier: Any | None, options: BatchOptions
) -> Iterable[CaseOutcome]:
    """Outcomes from the engine the options name, in completion order."""
    if options.engine == "ray":
        from .ray_engine import run_ray

        return run_ray(tasks, model_loader, address=options.ray_address, workers=options.resolved_workers(),
                       batch_size=options.batch_size, localizer=options.localizer)
    return run_local(tasks, model_loader, options.resolved_workers(), options.batch_size,
                     classifier=classifier, localizer=options.localizer)


def _write_outcomes(
    outcomes: Iterable[CaseOutcome], plan: _Plan, input_s: str, out: Path,
    emit: Callable[[BatchProgress], None],
) -> _Tally:
    """Write each case's overlays, then its report (last: it marks the case complete)."""
    by_id = {pl.spec.case_id: pl for pl in plan.planned}
    tally = _Tally()
    for oc in outcomes:
        pl = by_id[oc.case_id]
        failed = True
        if oc.report is not None:
            for rel, png in sorted(oc.overlays.items()):
                write_bytes_atomic(overlay_path(out, rel), png)
            doc = {"case": oc.case_id, **oc.report, "batch": batch_block(pl, input_s)}
            write_json(case_json_path(out, oc.case_id), doc)
            failed = any(im.get("error") for im in oc.report.get("images", []))
            tally.images += oc.n_images
            tally.cells += oc.n_cells
        else:
            assert oc.error is not None
            tally.errors[oc.case_id] = oc.error
        tally.ok += not failed
        tally.failed += failed
        emit(BatchProgress("case", case_id=oc.case_id, images=len(pl.spec.images), cells=oc.n_cells,
                           failed=failed))
    return tally


def _run_doc(
    summary: BatchSummary, plan: _Plan, tally: _Tally, options: BatchOptions, model_fp: dict[str, Any],
    input_s: str, started: str,
) -> dict[str, Any]:
    """``run.json``: the run's inputs and counts, then this invocation's own figures."""
    base = AnalysisOptions(um_per_px=options.um_per_px, stain=options.stain)
    return {
        "morph_version": morph_version(),
        "model": model_fp,
        "input_dir": input_s,
        "options": {
            "case_mode": options.case_mode,
            "um_per_px": base.resolved_um_per_px(),
            "stain": options.stain,
            "context_file": options.context_file,
            "overlays": options.overlays,
        },
        "counts": {
            "cases": summary.cases, "cases_ok": summary.cases_ok, "cases_partial": summary.cases_partial,
            "cases_failed": summary.cases_failed, "images_ok": summary.images_ok,
            "images_failed": summary.images_failed, "files_not_scored": summary.files_not_scored,
            "cells": summary.cells, "cells_counted": summary.cells_counted, "errors": summary.errors,
        },
        "duplicates": plan.duplicates,
        "context_rows_unused": plan.unused_context_rows,
        "run": {  # this invocation only: differs between a resumed and an uninterrupted run
            "started": started, "finished": _now(), "seconds": round(summary.seconds, 3),
            "engine": options.engine, "workers": options.resolved_workers(),
            "batch_size": options.batch_size, "force": options.force,
            "ok": tally.ok, "failed": tally.failed + sum(pl.status == "error" for pl in plan.planned),
            "skipped": summary.skipped,
            "images_per_s": round(summary.images_per_s, 3), "cells_per_s": round(summary.cells_per_s, 3),
        },
    }
