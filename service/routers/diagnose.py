"""``POST /v1/diagnose``: counts (+ optional scale and context) -> findings and differentials."""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from fastapi.concurrency import run_in_threadpool

from morph.errors import MorphError
from morph.labels import is_known
from morph.pipeline import DISCLAIMER

from ..deps import require_content_type
from ..errors import ServiceError, error_responses
from ..schemas import DiagnoseRequest, DiagnoseResponse
from . import api_router

router = api_router(tags=["analysis"])


@router.post(
    "/diagnose",
    summary="Findings and ranked differentials from cell counts (no images)",
    response_model=DiagnoseResponse,
    responses=error_responses(401, 415, 422, 503),
    dependencies=[Depends(require_content_type("application/json"))],
)
async def diagnose(body: DiagnoseRequest) -> dict[str, Any]:
    for label in body.counts:
        if not is_known(label):
            raise MorphError(
                "bad_label", f"unknown label {label!r}; see GET /v1/labels", path=f"counts.{label}"
            )
    try:
        from morph.differentials import diagnose as _diagnose
    except ImportError as exc:  # pragma: no cover - until the differentials issue lands
        raise ServiceError("not_ready", "the differentials engine is not available") from exc
    cells = [c.model_dump() for c in body.cells] if body.cells is not None else None
    findings, differentials = await run_in_threadpool(
        _diagnose, dict(body.counts), um_per_px=body.um_per_px, context=body.context, cells=cells,
        stain=body.stain,
    )
    return {"findings": findings, "differentials": differentials, "disclaimer": DISCLAIMER}
