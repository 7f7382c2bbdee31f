"""The FastAPI app: ``create_app(settings)``, and ``app`` for ``uvicorn service.app:app``.

The model is loaded by each analysis worker process (``service.workers``), never by the
server process itself (which so stays small, without torch): ``lifespan`` starts the
workers, and the routes get the analyzer's recipe and model card with
``Depends(get_analyzer)``. Uploaded images stay in memory: the multipart parser is told
never to spool to disk (the body limit bounds the memory), and nothing about an image is
logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.formparsers import MultiPartParser

import morph

from .deps import get_analyzer, open_store, require_api_key
from .errors import install_error_handlers
from .metrics import MetricsMiddleware, ServiceMetrics
from .middleware import BodyLimitMiddleware
from .routers import analyze, cases, diagnose, health, model
from .routers import metrics as metrics_router
from .settings import Settings
from .workers import AnalyzerRecipe, WorkerPool

log = logging.getLogger("service")

STATIC_DIR = Path(__file__).resolve().parent / "static"

_DESCRIPTION = """\
Blood-smear morphology as a service: upload the fields of one case and get back every cell
(located and classified), the counts, findings and ranked differentials with their evidence.

**Decision support only, not a diagnosis.** Every result must be reviewed by a qualified person.

Errors always have the shape `{"error": {"code", "message", "detail"}}`. When the server sets
`MORPH_API_KEYS`, every `/v1` request needs `Authorization: Bearer <key>`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. The model is loaded when the app starts (lifespan), in the workers."""
    settings = settings or Settings()
    logging.getLogger("service").setLevel(settings.log_level.upper())
    # Keep uploaded files in memory: the body limit bounds them. Starlette would otherwise
    # spool any part over 1 MB to a temporary file on disk (patient images must not be).
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_body_bytes + 1)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = app.state.pool = WorkerPool(settings.max_concurrency)
        if getattr(app.state, "analyzer", None) is None:
            app.state.analyzer = AnalyzerRecipe(settings.model, settings.localizer)
        app.state.store = await anyio.to_thread.run_sync(open_store, settings)
        if get_analyzer not in app.dependency_overrides:  # tests bring their own analyzer
            await pool.prestart(app.state.analyzer)  # the workers load the model; a bad one fails here
            log.info("model loaded: %s", app.state.analyzer.model_info().get("name"))
        yield
        app.state.analyzer = None
        await anyio.to_thread.run_sync(pool.close)
        if app.state.store is not None:
            app.state.store.close()
            app.state.store = None

    app = FastAPI(
        title="morph",
        version=morph.__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served below from local assets: labs' networks are often offline
        redoc_url=None,
        openapi_tags=[
            {"name": "analysis", "description": "images or counts in, findings and differentials out"},
            {"name": "cases", "description": "stored cases and their review (when MORPH_STORE_DIR is set)"},
            {"name": "model", "description": "the loaded model and the vocabularies"},
            {"name": "health", "description": "liveness, readiness and metrics (no API key)"},
        ],
    )
    app.state.settings = settings
    app.state.metrics = ServiceMetrics()
    app.state.analyzer = None
    app.state.store = None
    install_error_handlers(app)

    v1 = [Depends(require_api_key)]
    app.include_router(analyze.router, prefix="/v1", dependencies=v1)
    app.include_router(cases.router, prefix="/v1", dependencies=v1)
    app.include_router(diagnose.router, prefix="/v1", dependencies=v1)
    app.include_router(model.router, prefix="/v1", dependencies=v1)
    app.include_router(health.router)
    app.include_router(metrics_router.router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # interactive docs from the Swagger UI files shipped in the fastapi-offline package (Swagger
    # UI 5, which reads OpenAPI 3.1), so /docs works without a CDN
    import fastapi_offline

    docs_assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-assets", StaticFiles(directory=docs_assets), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title="morph API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    # middleware: the last added is the outermost
    metrics = app.state.metrics
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
        on_reject=lambda: metrics.errors.labels(code="payload_too_large").inc(),
    )
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origin_list, allow_methods=["GET", "POST", "PATCH"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


app = create_app()
