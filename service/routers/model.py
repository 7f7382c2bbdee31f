"""``GET /v1/model``, ``/v1/labels``, ``/v1/differentials``: the model card and vocabularies."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends

from morph import labels as L
from morph.overlay import label_color
from morph.pipeline import Analyzer

from ..deps import get_analyzer
from ..errors import ServiceError, error_responses
from ..schemas import DifferentialsOut, LabelsOut, ModelInfoOut
from ..workers import AnalyzerRecipe
from . import api_router

router = api_router(tags=["model"])


@router.get(
    "/model", summary="The loaded model: name, version, labels, preprocessing, metrics, provenance",
    response_model=ModelInfoOut, responses=error_responses(401, 503),
)
async def model_info(analyzer: Annotated[Analyzer | AnalyzerRecipe, Depends(get_analyzer)]) -> dict[str, Any]:
    return analyzer.model_info()  # the recipe's: the card its first worker sent back


@router.get("/labels", summary="The cell label vocabulary", response_model=LabelsOut,
            responses=error_responses(401))
async def labels() -> dict[str, Any]:
    return {
        "labels": list(L.ALL_LABELS),
        "rbc": list(L.RBC_LABELS),
        "nucleated": list(L.NUCLEATED_LABELS),
        "marrow": list(L.MARROW_LABELS),
        "special": {
            L.UNIDENTIFIED: "the model's confidence is under its tuned threshold",
            L.UNCLASSIFIED: "no classifier ran (localization only)",
            L.PLATELET: "platelets are located but not classified further",
        },
        "kinds": list(L.CELL_KINDS),
        "colors": {lab: _hex(label_color(lab)) for lab in (*L.ALL_LABELS, L.UNCLASSIFIED, L.PLATELET)},
    }


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@router.get("/differentials", summary="Every differential the rules engine can rank",
            response_model=DifferentialsOut, responses=error_responses(401, 503))
async def differentials() -> dict[str, Any]:
    try:
        from morph.differentials import list_differentials
    except ImportError as exc:  # pragma: no cover - until the differentials issue lands
        raise ServiceError("not_ready", "the differentials engine is not available") from exc
    return {"differentials": list_differentials()}
