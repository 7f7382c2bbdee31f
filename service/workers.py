"""Analyses in worker processes that a timeout or a client disconnect really stops.

A thread cannot be stopped: an analysis abandoned by a timeout ran on, kept its memory and
CPU, and had already given its concurrency slot back, so more analyses started beside it.
Here each analysis runs in a worker process that holds the app's analyzer: built there from
the model settings when the worker starts (:class:`AnalyzerRecipe`), so the server process
itself never loads torch or the models, or (tests) an analyzer object sent to it once. :class:`WorkerPool` has one slot per worker: a request takes a slot
(waiting counts against its time limit), hands its job to an idle worker and waits for the
answer. On a timeout or a disconnect the worker is killed, and the slot is given back only
once the process is gone, so the limit counts every analysis that is still running and the
CPU and memory of a stopped one come back at once. A killed worker is replaced when the next
job needs one.

Workers are forked from a ``forkserver`` that has imported torch and the model code but
loaded no weights and ran nothing (forking the server itself, with its threads and thread
pools, is not safe), so a replacement starts in about a second. A worker is also retired after
:data:`JOBS_PER_WORKER` jobs, which keeps the memory of a long-running server flat.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import anyio

from morph.errors import MorphError
from morph.pipeline import Analyzer, build_analyzer

from .errors import ServiceError

log = logging.getLogger("service")

#: A worker is replaced after this many jobs (allocator fragmentation stays bounded).
JOBS_PER_WORKER = 200
#: Seconds a new worker may take to be ready (build its analyzer) before it is given up.
WORKER_START_S = 120.0
#: Modules the forkserver imports once, so every worker starts with them loaded: code only,
#: never weights (each worker loads its own models; the forkserver holds no second copy).
PRELOAD = ["torch", "morph.classify", "morph.localize", "service.routers.analyze"]


@dataclass
class AnalyzerRecipe:
    """The server's analyzer as its workers build it (:func:`build_analyzer` of the two model
    choices, once per worker, at its start). The server process keeps only this and the model
    card the first worker sent back, so ``GET /v1/model`` and ``/readyz`` need no torch."""

    model: str | None
    localizer: str | None
    card: dict[str, Any] | None = None  # ``model_info()`` of the analyzer a worker built

    def build(self) -> Analyzer:
        return build_analyzer(self.model, self.localizer)

    def model_info(self) -> dict[str, Any]:
        if self.card is None:
            raise ServiceError("not_ready", "the model is not loaded yet; retry shortly")
        return self.card


_context_lock = threading.Lock()
_context: Any = None


def _mp_context() -> Any:
    """The ``forkserver`` context (``spawn`` where there is none), preloading :data:`PRELOAD`."""
    global _context
    with _context_lock:
        if _context is None:
            methods = mp.get_all_start_methods()
            _context = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
            if "forkserver" in methods:
                _context.set_forkserver_preload(PRELOAD)
        return _context


def _worker_main(conn: Connection, source: Any, torch_threads: int) -> None:
    """A worker's life: build the analyzer (from an :class:`AnalyzerRecipe`; any other
    ``source`` is the analyzer itself), say ready with its model card, then answer jobs
    ``(fn, args)`` with ``fn(analyzer, *args)`` until EOF."""
    try:
        import torch

        torch.set_num_threads(torch_threads)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    reply = _run_reply(_build, source)
    if reply[0] != "ok":  # the model cannot be loaded: say why, and end
        conn.send(reply)
        return
    analyzer, card = reply[1]
    conn.send(("ready", os.getpid(), card))
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_run_reply(fn, analyzer, *args))


def _build(source: Any) -> tuple[Any, dict[str, Any] | None]:
    """The worker's analyzer and, when it built it from a recipe, its model card."""
    if isinstance(source, AnalyzerRecipe):
        analyzer = source.build()
        return analyzer, analyzer.model_info()
    return source, None


def _morph_error(reply: tuple[Any, ...]) -> MorphError:
    """The :class:`MorphError` a ``("morph_error", ...)`` message carries."""
    _, code, message, path, detail = reply
    return MorphError(code, message, path=path, detail=detail)


def _run_reply(fn: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
    """``fn(*args)`` as the message the server reads: ok, a MorphError's parts, or an error."""
    try:
        return ("ok", fn(*args))
    except MorphError as exc:  # not picklable as is: sent as its parts
        return ("morph_error", exc.code, exc.message, exc.path, exc.detail)
    except Exception as exc:
        log.exception("failed in analysis worker %d", os.getpid())
        return ("error", type(exc).__name__)


@dataclass
class _Worker:
    process: Any
    conn: Connection
    analyzer: Any  # the object it was started with (kept, so that identity is never reused)
    jobs: int = 0
    alive: bool = field(default=True)

    def kill(self) -> None:
        """Kill the process and wait until it is gone (its memory is then freed)."""
        self.alive = False
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


class WorkerPool:
    """``size`` worker processes, one job each at a time (see the module docstring)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = anyio.Semaphore(size)
        self._idle: list[_Worker] = []
        self._torch_threads = max(1, (os.cpu_count() or 1) // size)
        self.started = 0  # workers started so far (tests and metrics read it)

    async def run(self, analyzer: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(analyzer, *args)`` in a worker process. Cancelling the caller (a timeout, a
        disconnect) kills the worker; the slot is free again only when it is dead."""
        async with self._slots:
            worker = await self._take(analyzer)
            try:
                result = await self._call(worker, fn, args)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(worker.kill)
                raise
            self._give_back(worker)
        return result

    async def _take(self, analyzer: Any) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.analyzer is analyzer and worker.process.is_alive():
                return worker
            await anyio.to_thread.run_sync(worker.kill)
        with anyio.CancelScope(shield=True):  # a half-started process is never left behind
            worker = await anyio.to_thread.run_sync(self._start, analyzer)
        return worker

    def _start(self, analyzer: Any) -> _Worker:
        ctx = _mp_context()
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(child, analyzer, self._torch_threads),
                              name="morph-analysis", daemon=True)
        process.start()
        child.close()
        worker = _Worker(process, parent, analyzer)
        try:  # ready: the analyzer is built and torch set up, so its first job starts at once
            ready = parent.recv() if parent.poll(WORKER_START_S) else None
        except (EOFError, OSError):
            ready = None
        if not ready or ready[0] != "ready":
            worker.kill()
            if ready and ready[0] == "morph_error":  # e.g. a model folder that is not there
                raise _morph_error(ready)
            raise ServiceError("worker_failed", "an analysis process could not be started; see the server log")
        if isinstance(analyzer, AnalyzerRecipe):
            analyzer.card = ready[2]
        self.started += 1
        return worker

    async def _call(self, worker: _Worker, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        worker.jobs += 1
        try:
            await anyio.to_thread.run_sync(worker.conn.send, (fn, args))
            await anyio.wait_readable(worker.conn.fileno())
            reply = await anyio.to_thread.run_sync(worker.conn.recv)
        except (EOFError, OSError) as exc:
            await anyio.to_thread.run_sync(worker.process.join, 5.0)  # reap it: its exit code says why
            code = worker.process.exitcode
            log.error("analysis worker %s ended during a request (exit code %s)", worker.process.pid, code)
            raise ServiceError(
                "worker_failed", "the analysis process ended unexpectedly (killed, or out of memory); "
                "the request was not completed and can be retried", detail={"exit_code": code},
            ) from exc
        kind = reply[0]
        if kind == "ok":
            return reply[1]
        if kind == "morph_error":
            raise _morph_error(reply)
        raise ServiceError("internal_error", "internal error; the server log has the details")

    def _give_back(self, worker: _Worker) -> None:
        if worker.jobs >= JOBS_PER_WORKER:
            threading.Thread(target=worker.kill, daemon=True).start()
        else:
            self._idle.append(worker)

    async def prestart(self, analyzer: Any) -> None:
        """Start every worker now (at app start) so that the first requests do not wait."""
        for _ in range(self.size - len(self._idle)):
            self._idle.append(await anyio.to_thread.run_sync(self._start, analyzer))

    def close(self) -> None:
        """Stop every idle worker (busy ones are killed by their requests' cancellation)."""
        while self._idle:
            self._idle.pop().kill()


async def run_unless_disconnected(receive: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``await fn(*args)``, cancelled when the client goes away (the ASGI ``receive`` channel
    says ``http.disconnect`` once the body has been read), which stops its worker."""
    outcome: dict[str, Any] = {}

    async def job() -> None:
        try:
            outcome["value"] = await fn(*args)
        except Exception as exc:  # raised below, outside the task group (no ExceptionGroup)
            outcome["error"] = exc
        finally:
            tg.cancel_scope.cancel()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        outcome["disconnected"] = True
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(job)
        tg.start_soon(watch)
    if "error" in outcome:
        raise outcome["error"]
    if "value" not in outcome:
        log.info("client went away; its analysis was stopped")
        raise ServiceError("client_disconnected", "the client closed the connection; the analysis was stopped")
    return outcome["value"]
