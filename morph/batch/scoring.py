"""Scoring one case: the glue between a :class:`CaseTask` and :meth:`Analyzer.run_case`
(runs in a worker process, a Ray actor or this process)."""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import MorphError
from ..io import encode_png
from ..pipeline import SHIPPED, Analyzer
from .options import CaseOutcome, CaseTask, InputError, ModelLoader

log = logging.getLogger(__name__)


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
