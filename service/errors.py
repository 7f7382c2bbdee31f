"""One error schema for every failure: ``{"error": {"code", "message", "detail"}}``.

Library errors (:class:`morph.errors.MorphError`) map to HTTP statuses here; the
service's own failures (auth, limits, content type, timeouts) use
:class:`ServiceError`. FastAPI's validation errors, 404/405s and unexpected
exceptions go through the same schema, and no traceback ever reaches a client
(unexpected errors are logged server-side with their traceback, never with
image bytes).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from morph.errors import MorphError

log = logging.getLogger("service")

#: HTTP status for each library error code (anything unlisted is a server fault: 500).
MORPH_STATUS: dict[str, int] = {
    "file_not_found": 422,
    "unreadable_file": 422,
    "empty_file": 422,
    "not_an_image": 422,
    "truncated_image": 422,
    "image_too_large": 413,
    "image_too_small": 422,
    "unsupported_image": 422,
    "bad_label_file": 422,
    "bad_label": 422,
    "bad_config": 422,
    "bad_context": 422,
    "bad_request": 422,
    "empty_dataset": 422,
    "symlink_loop": 422,
    "not_found": 404,
    "store_disabled": 409,
    "analysis_failed": 500,
    "model_not_found": 503,
    "bad_model": 503,
}

#: Library codes whose ``path`` names an uploaded file (others name a request field).
FILE_CODES: frozenset[str] = frozenset(
    {"unreadable_file", "empty_file", "not_an_image", "truncated_image", "image_too_large",
     "image_too_small", "unsupported_image"}
)

#: The service's own error codes, with their HTTP status.
SERVICE_CODES: dict[str, int] = {
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "store_disabled": 409,
    "payload_too_large": 413,
    "too_many_images": 413,
    "unsupported_media_type": 415,
    "validation_error": 422,
    "internal_error": 500,
    "worker_failed": 500,
    "client_disconnected": 499,  # nginx's convention; nobody is left to read it
    "not_ready": 503,
    "timeout": 504,
}

_STATUS_CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "validation_error", 503: "not_ready", 504: "timeout",
}


class ServiceError(Exception):
    """A failure of the service layer (limits, auth, content type, timeout)."""

    def __init__(
        self, code: str, message: str, *, status: int | None = None, detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status or SERVICE_CODES.get(code, 400)
        self.detail = detail
        self.headers = headers
        super().__init__(message)


def error_body(code: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The one error schema."""
    return {"error": {"code": code, "message": message, "detail": detail}}


def morph_error_parts(exc: MorphError) -> tuple[int, str, str, dict[str, Any] | None]:
    """Status, code, message (naming the file or field) and detail of a library error."""
    status = MORPH_STATUS.get(exc.code, 500)
    detail: dict[str, Any] = {}
    if exc.path is not None:
        detail["file" if exc.code in FILE_CODES else "field"] = exc.path
    if exc.detail is not None:
        detail["info"] = exc.detail
    message = f"{exc.path}: {exc.message}" if exc.path else exc.message
    return status, exc.code, message, detail or None


def error_response(
    request: Request | None, status: int, code: str, message: str, detail: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Build the error response and count it in the metrics (when the app has them)."""
    if request is not None:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.errors.labels(code=code).inc()
    return JSONResponse(error_body(code, message, detail), status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        # never echo the input back (it may be image bytes or patient data)
        out.append({
            "loc": [str(p) for p in err.get("loc", ())],
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        })
    return out


async def _on_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(request, exc.status, exc.code, exc.message, exc.detail, exc.headers)


async def _on_morph_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MorphError)
    status, code, message, detail = morph_error_parts(exc)
    if status >= 500:
        log.error("server-side library error on %s: %s", request.url.path, exc)
        message = "the service cannot handle this request right now (see the server log)"
    return error_response(request, status, code, message, detail)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = _validation_detail(exc)
    if detail:
        first = detail[0]
        where = ".".join(p for p in first["loc"] if p not in ("body", "query", "path", "header"))
        message = f"invalid request: {where or 'body'}: {first['msg']}"
    else:
        message = "invalid request"
    return error_response(request, 422, "validation_error", message, detail)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else code.replace("_", " ")
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 413:
        message = "request body too large"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(request, exc.status_code, code, message, None, headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(
        request, 500, "internal_error", "internal error; the server log has the details"
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through the one error schema."""
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(MorphError, _on_morph_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


#: OpenAPI ``responses`` entries documenting the error schema.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    from .schemas import ErrorResponse

    text = {
        401: "missing or invalid API key", 404: "not found", 413: "body, image or image count over a limit",
        409: "the case store is off (MORPH_STORE_DIR not set)",
        415: "wrong request content type", 422: "unreadable image (names the file) or invalid field",
        503: "model not loaded", 504: "analysis took longer than the time limit",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "error")} for s in statuses}
