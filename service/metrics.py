"""Prometheus metrics, one :class:`CollectorRegistry` per app (tests can build many apps)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets (seconds): API calls are ms, analyses are 0.1 s - tens of seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServiceMetrics:
    """The service's counters and histograms, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "morph_http_requests_total", "HTTP requests by route template, method and status",
            ("route", "method", "status"), registry=r,
        )
        self.latency = Histogram(
            "morph_http_request_duration_seconds", "HTTP request latency by route template",
            ("route", "method"), buckets=LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("morph_http_requests_in_flight", "requests being served", registry=r)
        self.images = Counter(
            "morph_images_processed_total", "uploaded images by outcome (ok / failed)",
            ("outcome",), registry=r,
        )
        self.cells = Counter("morph_cells_processed_total", "cells located in analysed images", registry=r)
        self.errors = Counter(
            "morph_errors_total", "error responses by error code", ("code",), registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route_of(scope: Scope) -> str:
    """The matched route's template (bounded label set), never the raw URL."""
    fastapi_scope = scope.get("fastapi")
    ctx: Any = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    for candidate in (ctx, scope.get("route")):
        path = getattr(candidate, "path_format", None) or getattr(candidate, "path", None)
        if isinstance(path, str) and path:
            return path
    root = scope.get("root_path")
    if scope.get("endpoint") is not None and isinstance(root, str) and root:
        return root  # a mount, e.g. /static
    return "<unmatched>"


#: The method label's values: a client can send any token as the method, so anything else is
#: counted as "other" (a label per made-up method would grow /metrics without bound).
METHODS: frozenset[str] = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(scope: Scope) -> str:
    method = str(scope.get("method", "")).upper()
    return method if method in METHODS else "other"


class MetricsMiddleware:
    """Pure ASGI middleware: counts requests and times them per route template.

    Uses the matched route's template (``/v1/analyze``), never the raw URL, so the
    label set stays bounded whatever clients send.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, _send)
        finally:
            self.metrics.in_flight.dec()
            route = _route_of(scope)
            method = method_label(scope)
            self.metrics.requests.labels(route=route, method=method, status=str(status)).inc()
            self.metrics.latency.labels(route=route, method=method).observe(time.perf_counter() - start)
