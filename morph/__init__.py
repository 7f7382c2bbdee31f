"""morph: blood-smear morphology, from image to ranked differentials (decision support).

Pure library code: arrays in, typed results out. The CLI (``morph_cli``), the web
service (``service``) and training scripts (``training``) are thin callers.
"""

from __future__ import annotations

from typing import Any

from .errors import ERROR_CODES, MorphError
from .labels import ALL_LABELS, NUCLEATED_LABELS, RBC_LABELS
from .types import CaseReport, Cell, FieldResult

__version__ = "0.1.0"

__all__ = [
    "ALL_LABELS",
    "ERROR_CODES",
    "NUCLEATED_LABELS",
    "RBC_LABELS",
    "CaseReport",
    "Cell",
    "FieldResult",
    "MorphError",
    "__version__",
    "load_model",
]


def load_model(path_or_name: str | None = None, **kwargs: Any) -> Any:
    """Load a model folder (a path, or the name of a folder under ``models/``).

    ``None`` loads the shipped default. Imported lazily so ``import morph`` stays light.
    """
    from .classify import load_model as _load

    return _load(path_or_name, **kwargs)
