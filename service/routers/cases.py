"""``/v1/cases``: stored cases, a reviewer's corrections of single cells, and the verified report.

Only when the case store is on (``MORPH_STORE_DIR``); otherwise every route answers 409
saying how to turn it on. The store's calls block (database, files): the routes are plain
functions, which FastAPI runs in its worker threads.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query
from fastapi.responses import FileResponse

from morph.store import CaseStore

from ..deps import get_store, require_content_type
from ..errors import error_responses
from ..schemas import CaseListOut, CaseOut, CellReviewOut, ReviewIn, VerifiedReportOut
from . import api_router

router = api_router(prefix="/cases", tags=["cases"])

Store = Annotated[CaseStore, Depends(get_store)]
CaseId = Annotated[str, Path(min_length=1, max_length=64, description="the case_id that POST /v1/analyze returned")]


@router.get("", summary="Stored cases, newest first", response_model=CaseListOut,
            responses=error_responses(401, 409))
def list_cases(
    store: Store,
    limit: Annotated[int, Query(ge=1, le=200, description="cases per page")] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="cases to skip")] = 0,
) -> dict[str, Any]:
    return store.list_cases(limit=limit, offset=offset)


@router.get("/{case_id}", summary="A stored case: its report, each cell's review and the audit trail",
            response_model=CaseOut, responses=error_responses(401, 404, 409))
def get_case(case_id: CaseId, store: Store) -> dict[str, Any]:
    return store.get_case(case_id)


@router.patch(
    "/{case_id}/cells/{image_index}/{cell_id}",
    summary="Relabel or confirm one cell",
    description="`{\"label\": ..., \"reviewer\": ...}` records a correction, `{\"confirmed\": true, "
    "\"reviewer\": ...}` confirms the cell's current label. Every change is added to the case's audit "
    "trail (who, when, old label, new label); nothing is overwritten.",
    response_model=CellReviewOut, responses=error_responses(401, 404, 409, 415, 422),
    dependencies=[Depends(require_content_type("application/json"))],
)
def review_cell(
    case_id: CaseId,
    image_index: Annotated[int, Path(ge=0, le=10_000, description="the image's position in the case")],
    cell_id: Annotated[int, Path(ge=0, le=10_000_000, description="the cell's id in that image")],
    review: ReviewIn,
    store: Store,
) -> dict[str, Any]:
    return store.review_cell(
        case_id, image_index, cell_id, reviewer=review.reviewer, label=review.label,
        confirmed=bool(review.confirmed),
    )


_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".tif": "image/tiff", ".bmp": "image/bmp"}


@router.get(
    "/{case_id}/images/{image_index}", summary="A stored image of a case, as it was uploaded",
    response_class=FileResponse, responses={200: {"content": {"image/*": {}}}, **error_responses(401, 404, 409)},
)
def case_image(
    case_id: CaseId,
    image_index: Annotated[int, Path(ge=0, le=10_000, description="the image's position in the case")],
    store: Store,
) -> FileResponse:
    path, _name = store.case_image(case_id, image_index)
    media = _MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, no-store"})


@router.get(
    "/{case_id}/report",
    summary="The verified report: counts, findings and differentials from the reviewed labels",
    description="Cells a reviewer labelled or confirmed count with that label, the others with the "
    "model's; findings and differentials are recomputed by the same library code as the analysis.",
    response_model=VerifiedReportOut, responses=error_responses(401, 404, 409),
)
def verified_report(case_id: CaseId, store: Store) -> dict[str, Any]:
    return store.verified_report(case_id)
