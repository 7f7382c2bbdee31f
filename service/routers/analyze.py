"""``POST /v1/analyze``: one case of one or more uploaded fields -> the case report."""

from __future__ import annotations

import base64
import json
import logging
import math
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, Any

import anyio
from fastapi import Depends, File, Form, Request, UploadFile
from fastapi.responses import Response

from morph.context import parse_context_json
from morph.errors import MorphError
from morph.io import ImageLimits, encode_png
from morph.pipeline import AnalysisOptions, Analyzer
from morph.store import CaseInput
from morph.store.blobs import save_by_content

from ..deps import (
    get_analyzer,
    get_metrics,
    get_pool,
    get_settings,
    get_store,
    require_content_type,
)
from ..errors import ServiceError, error_responses, morph_error_parts
from ..metrics import ServiceMetrics
from ..schemas import CaseReportOut, Stain, UmPerPx
from ..settings import Settings
from ..workers import AnalyzerRecipe, WorkerPool, run_unless_disconnected
from . import api_router

log = logging.getLogger("service")

router = api_router(tags=["analysis"])

_CONTEXT_EXAMPLE = '{"age_years": 67, "hb_g_dl": 8.9, "mcv_fl": 112}'


def _clean_name(raw: str | None, index: int) -> str:
    """The uploaded file's base name (browsers may send a full path), bounded in length."""
    name = (raw or "").strip()
    name = PureWindowsPath(PurePosixPath(name).name).name if name else ""
    return (name or f"image{index + 1}")[:200]


def _run_case(
    analyzer: Analyzer, uploads: list[tuple[str, bytes]], options: AnalysisOptions, overlay: bool
) -> tuple[dict[str, Any], int, int, int]:
    """Analyse (and optionally draw) one case with the library; runs in a worker process."""
    result = analyzer.run_case(uploads, options, overlays=overlay, legend=False)
    out = result.report.to_dict()
    ok = failed = cells = 0
    for i, (field, field_dict) in enumerate(zip(result.report.images, out["images"], strict=True)):
        if field.error is not None:
            failed += 1
            continue
        ok += 1
        cells += len(field.cells)
        picture = result.overlays[i] if overlay else None
        if picture is not None:
            field_dict["overlay_png"] = base64.b64encode(encode_png(picture)).decode("ascii")
    return out, ok, failed, cells


@router.post(
    "/analyze",
    summary="Analyse one case (one or more smear fields)",
    description="Upload one or more images of one case in the multipart field `files`. Every cell "
    "is located and classified; the counts, findings and ranked differentials of the case come "
    "back in the same JSON as `morph analyze --json`. A bad image in a multi-image case fails "
    "that image only (its `error` says why); when no image can be read the answer is an error "
    "naming the file. Decision support only, not a diagnosis.",
    response_model=CaseReportOut,
    responses=error_responses(401, 409, 413, 415, 422, 503, 504),
    dependencies=[Depends(require_content_type("multipart/form-data"))],
)
async def analyze(
    request: Request,
    files: Annotated[list[UploadFile], File(description="one or more images (JPEG, PNG, TIFF, BMP) of one case")],
    analyzer: Annotated[Analyzer | AnalyzerRecipe, Depends(get_analyzer)],
    settings: Annotated[Settings, Depends(get_settings)],
    metrics: Annotated[ServiceMetrics, Depends(get_metrics)],
    pool: Annotated[WorkerPool, Depends(get_pool)],
    um_per_px: Annotated[UmPerPx, Form()] = None,
    stain: Annotated[Stain, Form(description="wright (Wright/Giemsa) or nmb (new methylene blue)")] = "wright",
    context: Annotated[str | None, Form(description="clinical context as a JSON object", examples=[_CONTEXT_EXAMPLE])] = None,
    overlay: Annotated[bool, Form(description="add a base64 PNG overlay to every analysed image")] = False,
    store: Annotated[bool, Form(description="keep the case, its images and cells in the case store for "
                                "review (needs MORPH_STORE_DIR); the answer then has its case_id")] = False,
) -> Response:
    case_store = get_store(request) if store else None  # 409 before any work when the store is off
    if len(files) > settings.max_images:
        raise ServiceError(
            "too_many_images", f"{len(files)} images sent; at most {settings.max_images} per request",
            detail={"max_images": settings.max_images, "received": len(files)},
        )
    ctx = parse_context_json(context)
    options = AnalysisOptions(
        um_per_px=um_per_px, stain=stain, context=ctx,
        limits=ImageLimits(max_pixels=settings.max_image_pixels),
    ).validate()
    uploads: list[tuple[str, bytes]] = []
    for i, f in enumerate(files):
        name = _clean_name(f.filename, i)
        uploads.append((name, await f.read()))  # in memory (spooling to disk is disabled)
        await f.close()
    if settings.save_uploads_dir is not None:
        for _, data in uploads:
            save_by_content(settings.save_uploads_dir, data)

    try:
        with anyio.fail_after(settings.timeout_s):  # waiting for a free worker counts too
            out, ok, failed, cells = await run_unless_disconnected(
                request.receive, pool.run, analyzer, _run_case, uploads, options, overlay,
            )
    except TimeoutError:
        raise ServiceError(
            "timeout", f"the analysis took longer than {settings.timeout_s:g} s and was stopped",
            detail={"timeout_s": settings.timeout_s},
        ) from None
    metrics.images.labels(outcome="ok").inc(ok)
    metrics.images.labels(outcome="failed").inc(failed)
    metrics.cells.inc(cells)
    if ok == 0:
        raise _all_failed(out)
    if case_store is not None:
        out = _finite(out)
        case = CaseInput(out, [data for _, data in uploads], um_per_px=um_per_px, stain=stain, context=ctx)
        out["case_id"] = await anyio.to_thread.run_sync(case_store.add_case, case)
    return report_response(out)


def report_response(report: dict[str, Any]) -> Response:
    """The report as JSON, the bytes ``JSONResponse`` would send. NaN/inf (not valid JSON)
    become null; the report is walked for them only when the encoder finds one (the walk
    cost more per request than the encoding itself)."""
    try:
        body = json.dumps(report, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        body = json.dumps(_finite(report), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body.encode("utf-8"), media_type="application/json")


def _all_failed(report: dict[str, Any]) -> Exception:
    """No image could be analysed: the first image's error, with every file's error as detail."""
    errors = [im["error"] | {"file": im["path"]} for im in report["images"] if im.get("error")]
    first = errors[0]
    exc = MorphError(first["code"], first["message"], path=first["file"])
    status, code, message, _ = morph_error_parts(exc)
    if len(errors) > 1:
        message = f"none of the {len(errors)} images could be analysed; {message}"
    return ServiceError(
        code, message, status=status,
        detail={"file": first["file"], "errors": [
            {"file": e["file"], "code": e["code"], "message": e["message"]} for e in errors
        ]},
    )


def _finite(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) with null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
