"""``GET /healthz`` (alive) and ``GET /readyz`` (model loaded). Always open (no API key)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from morph.pipeline import Analyzer

from ..deps import get_analyzer
from ..errors import error_responses
from ..schemas import HealthOut, ReadyOut
from ..workers import AnalyzerRecipe
from . import api_router

router = api_router(tags=["health"])


@router.get("/healthz", summary="The process is alive", response_model=HealthOut)
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get("/readyz", summary="The model is loaded and requests can be served",
            response_model=ReadyOut, responses=error_responses(503))
async def readyz(analyzer: Annotated[Analyzer | AnalyzerRecipe, Depends(get_analyzer)]) -> dict[str, Any]:
    return {"status": "ready", "model": analyzer.model_info().get("name")}


# HEAD answers like GET (load balancers and `curl -I` probe with it); kept out of the schema,
# which would otherwise list each operation twice
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False, responses=error_responses(503))
