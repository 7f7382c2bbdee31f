"""Dependencies injected with ``Depends``: settings, the loaded analyzer, limits, auth.

Tests swap the model by overriding :func:`get_analyzer`
(``app.dependency_overrides[get_analyzer] = lambda: Analyzer(build_untrained())``).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from morph.errors import MorphError
from morph.pipeline import Analyzer

from .errors import ServiceError
from .metrics import ServiceMetrics
from .settings import Settings
from .workers import AnalyzerRecipe, WorkerPool

if TYPE_CHECKING:
    from morph.store import CaseStore

log = logging.getLogger("service")

_bearer = HTTPBearer(auto_error=False, description="one of the keys in MORPH_API_KEYS (when set)")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


def get_analyzer(request: Request) -> Analyzer | AnalyzerRecipe:
    """What the analysis workers run (the recipe they build the analyzer from, with its model
    card; tests: an analyzer object); 503 until the app has started."""
    analyzer: Analyzer | AnalyzerRecipe | None = getattr(request.app.state, "analyzer", None)
    if analyzer is None:
        raise ServiceError("not_ready", "the model is not loaded yet; retry shortly")
    return analyzer


def get_pool(request: Request) -> WorkerPool:
    """The worker processes that run analyses (``max_concurrency`` of them)."""
    pool: WorkerPool | None = getattr(request.app.state, "pool", None)
    if pool is None:
        pool = WorkerPool(get_settings(request).max_concurrency)
        request.app.state.pool = pool
    return pool


async def require_api_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """When ``MORPH_API_KEYS`` is set, every /v1 request needs ``Authorization: Bearer <key>``."""
    keys = get_settings(request).api_key_list
    if not keys:
        return
    given = credentials.credentials if credentials is not None else ""
    # compare against every key in constant time (no early exit that leaks which matched)
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given.encode(), key.encode())
    if not ok:
        raise ServiceError(
            "unauthorized",
            "missing or invalid API key; send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def require_content_type(*allowed: str) -> Callable[[Request], None]:
    """A dependency answering 415 unless the request's media type is one of ``allowed``."""

    def _check(request: Request) -> None:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media not in allowed:
            raise ServiceError(
                "unsupported_media_type",
                f"content type {media or '(none)'!r} is not accepted here; send {' or '.join(allowed)}",
                detail={"accepted": list(allowed)},
            )

    return _check


def open_store(settings: Settings) -> CaseStore | None:
    """The case store of ``settings`` (opened and migrated once, in lifespan), or ``None`` when off."""
    if settings.store_dir is None:
        if settings.database_url:
            raise MorphError("bad_config", "MORPH_DATABASE_URL needs MORPH_STORE_DIR too (the folder "
                             "that keeps the stored images)", path="MORPH_STORE_DIR")
        return None
    from morph.store import CaseStore

    store = CaseStore(settings.store_dir, settings.database_url or None)
    log.info("case store: %s", settings.store_dir)
    return store


def get_store(request: Request) -> CaseStore:
    """The case store; 409 with how to enable it when it is off."""
    store: CaseStore | None = getattr(request.app.state, "store", None)
    if store is None:
        raise ServiceError(
            "store_disabled",
            "the case store is off: set MORPH_STORE_DIR to a folder (and restart the service) to "
            "keep cases and reviews",
        )
    return store
