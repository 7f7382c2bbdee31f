"""The case store: analysed cases, reviewers' corrections and their export for retraining.

Opt-in: nothing is stored unless a caller opens a :class:`CaseStore` (the service does so
when ``MORPH_STORE_DIR`` is set). SQLAlchemy models, Alembic migrations shipped in
``morph/store/migrations``, SQLite in the store folder or any database URL.
"""

from __future__ import annotations

from .export import ExportSummary, export_reviewed
from .repository import CaseInput, CaseStore
from .review import IN_REVIEW, REVIEW_LABELS, UNREVIEWED, VERIFIED

__all__ = [
    "IN_REVIEW",
    "REVIEW_LABELS",
    "UNREVIEWED",
    "VERIFIED",
    "CaseInput",
    "CaseStore",
    "ExportSummary",
    "export_reviewed",
]
