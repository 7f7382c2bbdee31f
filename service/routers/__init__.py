"""One router per resource, each made by :func:`api_router` so every route's JSON body is guarded."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..body_guard import GuardedJSONRoute


def api_router(**kwargs: Any) -> APIRouter:
    """An ``APIRouter`` whose routes refuse hostile JSON bodies with a 422 naming the field."""
    return APIRouter(route_class=GuardedJSONRoute, **kwargs)
