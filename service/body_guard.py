"""JSON request bodies are checked for hostile numbers and nesting before FastAPI parses them.

FastAPI parses a JSON body with ``json.loads`` and answers anything but a syntax error with
a bare 400 ("There was an error parsing the body"): a 5,000-digit integer, arrays nested
100,000 deep. Other hostile values parse into something nobody meant (``1e400`` and ``NaN``
as non-finite floats, a repeated key keeping its last value). Every API route is a
:class:`GuardedJSONRoute`, which scans the body with :func:`morph.json_bounds.find_json_hazard`
first and refuses such a body as a 422 ``validation_error`` naming the field, in the one
error schema.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from morph.json_bounds import find_json_hazard

#: Deepest nesting a JSON body may have: /v1/diagnose needs 3 (cells, a cell, a field).
MAX_BODY_DEPTH = 32


def _is_json(request: Request) -> bool:
    """FastAPI's own rule for parsing a body as JSON: a json or +json type, or none at all."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _invalid(kind: str, where: tuple[str | int, ...], message: str) -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body", *where), "msg": message, "input": None}])


def check_json_body(body: bytes) -> None:
    """Raise a validation error naming the field when a JSON body is hostile (see module doc)."""
    try:
        text = body.decode(json.detect_encoding(body))
    except (UnicodeDecodeError, LookupError):
        raise _invalid("json_invalid", (), "the body is not UTF-8 JSON text") from None
    hazard = find_json_hazard(text, max_depth=MAX_BODY_DEPTH)
    if hazard is not None:
        raise _invalid(hazard.kind, hazard.path, hazard.message)


class GuardedJSONRoute(APIRoute):
    """An API route whose JSON body passes :func:`check_json_body` before FastAPI parses it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def guarded(request: Request) -> Response:
            if _is_json(request):
                body = await request.body()  # kept on the request: FastAPI reads it from there
                if body:
                    check_json_body(body)
            return await handler(request)

        return guarded
