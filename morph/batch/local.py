"""The local engine: a process pool (forkserver), one model per worker process."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..pipeline import SHIPPED
from .options import BatchOptions, CaseOutcome, CaseTask, InputError, ModelLoader
from .scoring import CaseScorer, single_thread_torch

log = logging.getLogger(__name__)

#: The scorer of this worker process (set by the pool initializer).
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
        ctx.set_forkserver_preload(["morph.batch.scoring", "morph.classify", "morph.overlay"])
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
