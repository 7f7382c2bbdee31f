"""The Ray Data engine for batch scoring (``morph score --engine ray``).

Same tasks, same :class:`~morph.batch.scoring.CaseScorer`, same outputs as the local engine:
the driver (this process) plans the run and writes every output file; Ray only scores.
Cases go through ``Dataset.map_batches`` with a callable class, so each actor loads the
model once and keeps it for all the batches it scores.

Ray is an optional dependency (``pip install 'morph[distributed]'``), imported only
when this engine runs. On a cluster, every node needs morph installed and the input
folder mounted at the same absolute path (the driver resolves input paths to absolute
paths before handing them out); outputs are written by the driver only.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import MorphError
from .options import CaseOutcome, CaseTask, ModelLoader
from .scoring import CaseScorer, single_thread_torch

log = logging.getLogger(__name__)


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MorphError(
            "bad_request",
            "the Ray engine needs the optional dependency: pip install 'morph[distributed]' "
            f"(or 'ray[data]') ({exc})",
            path="engine",
        ) from exc
    return ray


class RayCaseScorer:
    """A Ray Data callable class: one model per actor, a batch of pickled tasks in,
    a batch of pickled :class:`~morph.batch.options.CaseOutcome` s out."""

    def __init__(self, model_loader: ModelLoader | None, localizer: str = "shipped") -> None:
        single_thread_torch()
        self.scorer = CaseScorer(model_loader, localizer=localizer)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        outs = [pickle.dumps(self.scorer(pickle.loads(blob))) for blob in batch["task"]]
        return {"outcome": np.array(outs, dtype=object)}


def run_ray(
    tasks: Sequence[CaseTask],
    model_loader: ModelLoader | None,
    *,
    address: str | None = None,
    workers: int = 1,
    batch_size: int = 1,
    localizer: str = "shipped",
) -> Iterator[CaseOutcome]:
    """Score ``tasks`` with Ray Data, yielding outcomes as batches finish.

    Connects to ``address`` (``"auto"``, ``"ray://host:10001"``...) or, when ``None``
    and Ray is not running yet in this process, starts a local Ray with ``workers``
    CPUs. An already initialised Ray (a test, a notebook) is used as it is. ``workers``
    is the number of scoring actors (one CPU each).
    """
    if not tasks:
        return
    ray = import_ray()
    started_here = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "logging_level": logging.WARNING}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = max(1, workers)
        log.info("starting Ray (%s)", address or f"local, {max(1, workers)} CPUs")
        ray.init(**kwargs)
        started_here = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        n_actors = max(1, min(workers or 1, math.ceil(len(tasks) / batch_size)))
        ds = ray.data.from_items(
            [{"task": pickle.dumps(t)} for t in tasks],
            override_num_blocks=max(1, math.ceil(len(tasks) / batch_size)),
        )
        ds = ds.map_batches(
            RayCaseScorer,
            fn_constructor_kwargs={"model_loader": model_loader, "localizer": localizer},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            num_cpus=1,
        )
        for row in ds.iter_rows():
            yield pickle.loads(row["outcome"])
    finally:
        if started_here:
            ray.shutdown()
