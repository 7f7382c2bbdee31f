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
   process (model loaded once per worker) or per Ray actor (:mod:`morph.batch_ray`);
4. writes each case report atomically as soon as it is done, then **regenerates**
   ``cells.csv``, ``cases.csv``, ``errors.csv`` and ``run.json`` from the case files,
   sorted, so a run killed at any moment and restarted ends with exactly the outputs
   of an uninterrupted run.

Library code: progress is reported through a callback (:class:`BatchProgress` events),
never printed.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import MorphError
from .io import (
    IMAGE_SUFFIXES,
    encode_png,
    file_sha256,
    read_csv_rows,
    read_image,
    read_json,
    remove_stale_temp_files,
    write_bytes_atomic,
    write_csv,
    write_json,
)
from .labels import ALL_LABELS, PLATELET, UNCLASSIFIED
from .pipeline import SHIPPED, AnalysisOptions, Analyzer, load_classifier, load_localizer

log = logging.getLogger(__name__)

CASE_MODES: tuple[str, ...] = ("subfolder", "image")
ENGINES: tuple[str, ...] = ("local", "ray")
#: Version of the case-file layout; part of every fingerprint.
FORMAT_VERSION = 1

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

ModelLoader = Callable[[], Any]


# ------------------------------------------------------------------------------------------
# options and results
# ------------------------------------------------------------------------------------------
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
        return _n_cells(self.report) if self.report else 0


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


# ------------------------------------------------------------------------------------------
# discovery
# ------------------------------------------------------------------------------------------
def _usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _join(root: str, rel: str) -> str:
    return os.path.join(root, *rel.split("/")) if rel else root


def discover_cases(
    input_dir: str | os.PathLike[str],
    case_mode: str = "subfolder",
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> Discovery:
    """Walk ``input_dir`` and group its images into cases (sorted, deterministic).

    Symbolic links are followed, but never into a folder already walked (a loop or an
    alias of a real folder, which is walked under its own name): those are reported as
    ``symlink_loop``. Hidden entries (names starting with
    ``.``) and the paths in ``exclude`` (the output folder, the context file) are ignored.
    Every other file that is not an image, and every folder that cannot be listed, is
    reported as an :class:`InputError`. Empty folders are not cases and not errors,
    except a folder named like an image file (``x.png/``) that holds no image.
    """
    if case_mode not in CASE_MODES:
        raise MorphError("bad_request", f"unknown case mode {case_mode!r}", path="case_mode")
    root_s = str(input_dir)
    root = Path(input_dir)
    if not root.exists():
        raise MorphError("file_not_found", "the input folder does not exist", path=root_s)
    if not root.is_dir():
        raise MorphError("bad_request", "the input must be a folder of cases", path=root_s)
    excluded = {os.path.realpath(e) for e in exclude}
    visited: dict[str, str] = {}
    links: list[tuple[str, str]] = []  # folder symlinks, followed after every real folder
    out = Discovery()

    def walk(dir_path: str, rel: str) -> bool:
        """Walk one folder; True when it (or a folder under it) held an image."""
        visited[os.path.realpath(dir_path)] = rel
        try:
            entries = sorted(os.scandir(dir_path), key=lambda e: e.name)
        except OSError as exc:
            out.errors.append(InputError(_join(root_s, rel), "unreadable_file",
                                         f"cannot list the folder ({exc.strerror or exc})"))
            return False
        images: list[ImageInput] = []
        subdirs: list[tuple[str, str]] = []
        for e in entries:
            if e.name.startswith("."):
                continue
            child_rel = f"{rel}/{e.name}" if rel else e.name
            shown = _join(root_s, child_rel)
            try:
                st = os.stat(e.path)  # follows links
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    out.errors.append(InputError(shown, "symlink_loop",
                                                 "symbolic link loop: the link never reaches a file or folder"))
                elif e.is_symlink():
                    out.errors.append(InputError(shown, "file_not_found",
                                                 "broken symbolic link: its target does not exist"))
                else:
                    out.errors.append(InputError(shown, "unreadable_file",
                                                 f"cannot read the file ({exc.strerror or exc})"))
                continue
            if os.path.realpath(e.path) in excluded:
                continue
            if stat.S_ISDIR(st.st_mode):
                (links if e.is_symlink() else subdirs).append((e.path, child_rel))
            elif stat.S_ISREG(st.st_mode):
                suffix = os.path.splitext(e.name)[1].lower()
                if suffix in IMAGE_SUFFIXES:
                    images.append(ImageInput(child_rel, shown))
                else:
                    out.errors.append(InputError(
                        shown, "not_an_image",
                        f"not an image file (suffix {suffix or 'none'!r}; images end in "
                        f"{', '.join(IMAGE_SUFFIXES)}); not scored",
                    ))
            else:
                out.errors.append(InputError(shown, "unreadable_file",
                                             "not a regular file (a pipe, socket or device); not scored"))
        if case_mode == "image" or not rel:
            out.cases.extend(CaseSpec(im.rel, [im]) for im in images)
        elif images:
            out.cases.append(CaseSpec(rel, images))
        found = bool(images)
        for path, sub_rel in subdirs:
            found = walk(path, sub_rel) or found
        if rel and not found and os.path.splitext(rel)[1].lower() in IMAGE_SUFFIXES:
            try:  # read_image says what is wrong with an "image" that is a folder
                read_image(dir_path)
            except MorphError as exc:
                out.errors.append(InputError.from_exc(exc, _join(root_s, rel)))
        return found

    walk(str(root), "")
    while links:  # a linked folder is walked only when no real folder (or earlier link) was
        links.sort(key=lambda t: t[1])
        path, rel = links.pop(0)
        real = os.path.realpath(path)
        if real in visited:
            out.errors.append(InputError(
                _join(root_s, rel), "symlink_loop",
                f"links to a folder already walked ({_join(root_s, visited[real]) if visited[real] else root_s}); "
                "not followed, to avoid a loop or scoring the same images twice",
            ))
            continue
        walk(path, rel)
    out.cases.sort(key=lambda c: c.case_id)
    return out


# ------------------------------------------------------------------------------------------
# clinical context from a CSV
# ------------------------------------------------------------------------------------------
def load_context_csv(path: str | os.PathLike[str]) -> dict[str, dict[str, Any] | MorphError]:
    """Read a context CSV: one row per case (column ``case``), the other columns context fields.

    Returns ``{case_id: validated context dict | MorphError}``: a bad row is an error for
    that case only. Empty cells mean "not given". A file without a ``case`` column is a
    usage error (raised).
    """
    from .context import context_from_text

    name = str(path)
    header, rows = read_csv_rows(path)
    key = next((k for k in ("case", "case_id") if k in header), None)
    if key is None:
        raise MorphError("bad_context", f"the context file needs a 'case' column (has: {', '.join(header)})",
                         path=name)
    out: dict[str, dict[str, Any] | MorphError] = {}
    for line, row in rows:
        case_id = row.pop(key).strip().strip("/")
        if not case_id:
            raise MorphError("bad_context", f"line {line} has no case id", path=name)
        if case_id in out:
            out[case_id] = MorphError("bad_context", f"line {line}: a second row for case {case_id!r}", path=name)
            continue
        try:
            out[case_id] = context_from_text(row)
        except MorphError as exc:
            field_s = f" (column {exc.path})" if exc.path else ""
            out[case_id] = MorphError("bad_context", f"line {line}, case {case_id!r}: {exc.message}{field_s}",
                                      path=name)
    return out


# ------------------------------------------------------------------------------------------
# fingerprints
# ------------------------------------------------------------------------------------------
def model_fingerprint(classifier: Any | None) -> dict[str, Any]:
    """Identity of a classifier: name, version and a SHA-256 over its weights."""
    if classifier is None:
        return {"name": None, "version": None, "weights_sha256": None}
    info = classifier.info() if hasattr(classifier, "info") else {}
    h = hashlib.sha256()
    net = getattr(classifier, "net", None)
    if net is not None and hasattr(net, "state_dict"):
        for k, v in sorted(net.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(info, sort_keys=True, default=str).encode())
    return {"name": info.get("name"), "version": info.get("version"), "weights_sha256": h.hexdigest()}


def case_fingerprint(
    case_id: str,
    input_dir: str,
    inputs: Sequence[tuple[str, str]],
    options: AnalysisOptions,
    model: dict[str, Any],
) -> str:
    """SHA-256 over everything that determines a case's report."""
    from . import __version__

    doc = {
        "format": FORMAT_VERSION,
        "morph": __version__,
        "case": case_id,
        "input_dir": input_dir,
        "inputs": [list(x) for x in inputs],
        "um_per_px": options.resolved_um_per_px(),
        "stain": options.stain,
        "context": options.context,
        "limits": [options.limits.max_pixels, options.limits.min_side],
        "model": model,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _hash_input(path: str) -> str:
    try:
        return file_sha256(path)
    except MorphError as exc:
        return f"unreadable:{exc.code}"


# ------------------------------------------------------------------------------------------
# scoring one case (runs in a worker process, a Ray actor or this process)
# ------------------------------------------------------------------------------------------
class CaseScorer:
    """Scores :class:`CaseTask` s with one :class:`Analyzer` (the model loaded once)."""

    def __init__(
        self, model_loader: ModelLoader | None = None, classifier: Any | None = None, localizer: str = SHIPPED,
    ) -> None:
        if classifier is None and model_loader is not None:
            classifier = model_loader()
        self.analyzer = Analyzer(classifier=classifier, localizer=localizer)

    def __call__(self, task: CaseTask) -> CaseOutcome:
        t0 = time.perf_counter()
        try:
            result = self.analyzer.run_case(
                [(shown, real) for _rel, shown, real in task.images], task.options, overlays=task.overlays,
            )
            report = result.report
            overlays = {
                rel: encode_png(picture)
                for (rel, _shown, _real), picture in zip(task.images, result.overlays, strict=False)
                if picture is not None
            }
        except MorphError as exc:
            return CaseOutcome(task.case_id, None, error=InputError.from_exc(exc, task.case_id),
                               seconds=time.perf_counter() - t0)
        except Exception as exc:  # a bug must not stop the other cases; the case is retried next run
            log.exception("scoring case %s failed", task.case_id)
            return CaseOutcome(
                task.case_id, None,
                error=InputError(task.case_id, "analysis_failed", f"{type(exc).__name__}: {exc}"),
                seconds=time.perf_counter() - t0,
            )
        return CaseOutcome(task.case_id, report.to_dict(), overlays, seconds=time.perf_counter() - t0)


def single_thread_torch() -> None:
    """One intra-op thread per worker: workers are the parallelism, and results must not
    depend on how many there are."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


# -- local engine: a process pool --------------------------------------------------------------
_WORKER: CaseScorer | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed driver not yet reaped by its parent is a zombie: dead all the same
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _watch_driver(driver_pid: int) -> None:
    # A worker blocks on the task queue, whose other end it also holds, so it would never
    # see the driver die (SIGKILL leaves no time to stop the pool): poll instead.
    while True:
        time.sleep(0.5)
        if not _pid_alive(driver_pid):
            os._exit(1)


def _init_worker(model_loader: ModelLoader | None, driver_pid: int, localizer: str = SHIPPED) -> None:
    global _WORKER
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    single_thread_torch()
    threading.Thread(target=_watch_driver, args=(driver_pid,), daemon=True).start()
    _WORKER = CaseScorer(model_loader, localizer=localizer)


def _mp_context() -> Any:
    """forkserver where the platform has it (the server imports torch and morph once; each
    worker is forked from it, clean and fast), else spawn. Never plain fork: forking a
    process that already runs torch threads can deadlock."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["morph.batch", "morph.classify", "morph.overlay"])
        return ctx
    return multiprocessing.get_context("spawn")


def _score_chunk(tasks: list[CaseTask]) -> list[CaseOutcome]:
    assert _WORKER is not None, "worker not initialised"
    return [_WORKER(t) for t in tasks]


def warm_up(options: BatchOptions) -> None:
    """Start the worker-process server now (optional), so that its imports of torch and
    morph run while the caller loads the model and hashes the inputs."""
    if options.engine != "local" or options.resolved_workers() == 0:
        return
    ctx = _mp_context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _chunks(tasks: Sequence[CaseTask], size: int) -> list[list[CaseTask]]:
    return [list(tasks[i:i + size]) for i in range(0, len(tasks), size)]


def run_local(
    tasks: Sequence[CaseTask],
    model_loader: ModelLoader | None,
    workers: int,
    batch_size: int = 1,
    classifier: Any | None = None,
    localizer: str = SHIPPED,
) -> Iterator[CaseOutcome]:
    """Score tasks in ``workers`` processes (forkserver or spawn; ``0`` = this process).

    Outcomes arrive in completion order. At most ``2 * workers`` chunks are in flight,
    so memory does not grow with the number of cases. A worker that dies (killed, out of
    memory) fails only the cases it held (they are scored again on the next run) and the
    pool is restarted, unless a fresh pool breaks before scoring anything (a model that
    cannot load in a worker): then every remaining case fails the same way.
    """
    if not tasks:
        return
    if workers == 0:
        import torch

        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            scorer = CaseScorer(model_loader, classifier, localizer)
            for t in tasks:
                yield scorer(t)
        finally:
            torch.set_num_threads(n)
        return
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = _mp_context()
    pending_chunks = _chunks(tasks, batch_size)
    pending_chunks.reverse()
    n_workers = max(1, min(workers, len(pending_chunks)))
    give_up = False
    while pending_chunks:
        broken = False
        n_done = 0
        with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(model_loader, os.getpid(), localizer)) as ex:
            in_flight: dict[Future[list[CaseOutcome]], list[CaseTask]] = {}
            while pending_chunks or in_flight:
                while pending_chunks and len(in_flight) < 2 * n_workers and not broken:
                    chunk = pending_chunks.pop()
                    in_flight[ex.submit(_score_chunk, chunk)] = chunk
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in done:
                    chunk = in_flight.pop(fut)
                    try:
                        results = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        yield from _died(chunk)
                        continue
                    n_done += 1
                    yield from results
        if broken:
            if n_done == 0 and give_up is False and pending_chunks:
                give_up = True  # one more try: a worker may have been killed from outside
            elif n_done == 0:
                for chunk in pending_chunks:
                    yield from _died(chunk)
                return
            else:
                give_up = False
            log.warning("a worker process died; restarting the pool for the %d remaining batch(es)",
                        len(pending_chunks))


def _died(chunk: list[CaseTask]) -> Iterator[CaseOutcome]:
    for t in chunk:
        yield CaseOutcome(t.case_id, None, error=InputError(
            t.case_id, "analysis_failed",
            "the worker process scoring this case died (killed, out of memory, or the model could "
            "not be loaded); run again to retry it"))


# ------------------------------------------------------------------------------------------
# outputs
# ------------------------------------------------------------------------------------------
def case_json_path(out_dir: str | os.PathLike[str], case_id: str) -> Path:
    """``OUT_DIR/cases/<case id>.json`` (the case id is its relative path in the input)."""
    return Path(out_dir, "cases", *case_id.split("/")).with_name(case_id.split("/")[-1] + ".json")


def overlay_path(out_dir: str | os.PathLike[str], rel: str) -> Path:
    """``OUT_DIR/overlays/<image relative path>.png``."""
    parts = rel.split("/")
    return Path(out_dir, "overlays", *parts[:-1], parts[-1] + ".png")


def _n_cells(report: dict[str, Any]) -> int:
    return sum(len(im.get("cells", ())) for im in report.get("images", ()))


def _read_case_file(path: Path) -> dict[str, Any] | None:
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


# ------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------
@dataclass
class _Planned:
    spec: CaseSpec
    fingerprint: str | None = None
    task: CaseTask | None = None
    error: InputError | None = None  # a case-level error known before scoring (context)
    status: str = "todo"  # todo | skipped | error


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_batch(
    input_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: BatchOptions | None = None,
    model_loader: ModelLoader | None = None,
    *,
    classifier: Any | None = None,
    progress: Callable[[BatchProgress], None] | None = None,
) -> BatchSummary:
    """Score every case under ``input_dir`` into ``out_dir`` (see the module docstring).

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
    t_start = time.perf_counter()
    started = _now()
    emit = progress or (lambda _e: None)
    input_s = str(input_dir)
    out = Path(out_dir)
    exclude: list[str | os.PathLike[str]] = [out]
    contexts: dict[str, dict[str, Any] | MorphError] = {}
    if options.context_file:
        contexts = load_context_csv(options.context_file)
        exclude.append(options.context_file)
    disc = discover_cases(input_dir, options.case_mode, exclude=exclude)
    if not disc.cases and not disc.errors:
        raise MorphError("bad_request", "no images found in the input folder", path=input_s)
    unused = sorted(set(contexts) - {c.case_id for c in disc.cases})
    for cid in unused:
        log.warning("the context file has a row for %r, which is not a case of this run", cid)

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

    # fingerprint every case, decide what to score
    base = AnalysisOptions(um_per_px=options.um_per_px, stain=options.stain)
    planned: list[_Planned] = []
    by_hash: dict[str, list[str]] = {}
    for spec in disc.cases:
        pl = _Planned(spec)
        planned.append(pl)
        hashes = [(im.rel, _hash_input(_join(input_s, im.rel))) for im in spec.images]
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
        opts = AnalysisOptions(um_per_px=base.um_per_px, stain=base.stain, context=ctx)
        pl.fingerprint = case_fingerprint(spec.case_id, input_s, hashes, opts, model_fp)
        pl.task = CaseTask(
            spec.case_id,
            tuple((im.rel, im.path, os.path.abspath(_join(input_s, im.rel))) for im in spec.images),
            opts,
            options.overlays,
        )
        if not options.force and _is_current(out, pl, options.overlays):
            pl.status = "skipped"
    duplicates = sorted(sorted(v) for v in by_hash.values() if len(v) > 1)
    for group in duplicates:
        log.warning("duplicate files (same content, each scored): %s", ", ".join(group))

    todo = [pl for pl in planned if pl.status == "todo"]
    n_skipped = sum(pl.status == "skipped" for pl in planned)
    emit(BatchProgress("start", cases_total=len(planned), cases_todo=len(todo),
                       images_todo=sum(len(pl.spec.images) for pl in todo)))

    # score
    run_errors: dict[str, InputError] = {}
    by_id = {pl.spec.case_id: pl for pl in planned}
    tasks = [pl.task for pl in todo if pl.task is not None]
    images_scored = cells_scored = ok_now = failed_now = 0
    if options.engine == "ray":
        from .batch_ray import run_ray

        outcomes: Iterable[CaseOutcome] = run_ray(
            tasks, model_loader, address=options.ray_address, workers=options.resolved_workers(),
            batch_size=options.batch_size, localizer=options.localizer,
        )
    else:
        outcomes = run_local(tasks, model_loader, options.resolved_workers(), options.batch_size,
                             classifier=classifier, localizer=options.localizer)
    for oc in outcomes:
        pl = by_id[oc.case_id]
        failed = True
        if oc.report is not None:
            for rel, png in sorted(oc.overlays.items()):
                write_bytes_atomic(overlay_path(out, rel), png)
            doc = {"case": oc.case_id, **oc.report, "batch": _batch_block(pl, input_s)}
            write_json(case_json_path(out, oc.case_id), doc)  # last: marks the case complete
            failed = any(im.get("error") for im in oc.report.get("images", []))
            images_scored += oc.n_images
            cells_scored += oc.n_cells
        else:
            assert oc.error is not None
            run_errors[oc.case_id] = oc.error
        ok_now += not failed
        failed_now += failed
        emit(BatchProgress("case", case_id=oc.case_id, images=len(pl.spec.images), cells=oc.n_cells,
                           failed=failed))

    summary = _write_tables(out, input_s, planned, disc, run_errors, duplicates)
    elapsed = time.perf_counter() - t_start
    summary.scored, summary.skipped = len(todo), n_skipped
    summary.images_scored, summary.cells_scored, summary.seconds = images_scored, cells_scored, elapsed
    run_doc = {
        "morph_version": _morph_version(),
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
        "duplicates": duplicates,
        "context_rows_unused": unused,
        "run": {  # this invocation only: differs between a resumed and an uninterrupted run
            "started": started, "finished": _now(), "seconds": round(elapsed, 3),
            "engine": options.engine, "workers": options.resolved_workers(),
            "batch_size": options.batch_size, "force": options.force,
            "ok": ok_now, "failed": failed_now + sum(pl.status == "error" for pl in planned),
            "skipped": n_skipped,
            "images_per_s": round(summary.images_per_s, 3), "cells_per_s": round(summary.cells_per_s, 3),
        },
    }
    write_json(out / "run.json", run_doc)
    emit(BatchProgress("finish", cases_total=len(planned)))
    return summary


def _morph_version() -> str:
    from . import __version__

    return __version__


def _batch_block(pl: _Planned, input_s: str) -> dict[str, Any]:
    assert pl.task is not None
    return {
        "fingerprint": pl.fingerprint,
        "input_dir": input_s,
        "inputs": [im.rel for im in pl.spec.images],
        "context": pl.task.options.context,
    }


def _is_current(out: Path, pl: _Planned, overlays: bool) -> bool:
    doc = _read_case_file(case_json_path(out, pl.spec.case_id))
    if not doc or (doc.get("batch") or {}).get("fingerprint") != pl.fingerprint:
        return False
    if overlays:
        failed = {im.get("path") for im in doc.get("images", []) if im.get("error")}
        for im in pl.spec.images:
            if im.path not in failed and not overlay_path(out, im.rel).is_file():
                return False
    return True


def _write_tables(
    out: Path,
    input_s: str,
    planned: list[_Planned],
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
                doc = _read_case_file(case_json_path(out, cid))
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
                stats["cells"] += _n_cells(doc)
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
