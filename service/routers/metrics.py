"""``GET /metrics``: Prometheus text format (open, like the health endpoints)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..deps import get_metrics
from ..metrics import ServiceMetrics
from . import api_router

router = api_router(tags=["health"])


@router.get(
    "/metrics", summary="Prometheus metrics", response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition"}},
)
async def metrics(m: Annotated[ServiceMetrics, Depends(get_metrics)]) -> Response:
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
