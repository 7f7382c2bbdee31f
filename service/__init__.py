"""The morph web service: a FastAPI app over :class:`morph.pipeline.Analyzer`.

``create_app(settings)`` builds an app; ``service.app:app`` is the module-level
app that ``uvicorn service.app:app`` and ``morph serve`` run.
"""
