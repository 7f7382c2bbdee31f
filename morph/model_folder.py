"""Model folders: find one by path or name, check the files it needs, read its parts.

A model folder is what training writes and inference loads: ``config.json`` (the
architecture, its settings and provenance), ``weights.pt`` (the state dict), and JSON parts
that depend on the model: a classifier's ``labels.json`` and ``preprocessing.json``, the tuned
``thresholds.json`` of a classifier or a localizer, ``metrics.json`` when it was measured.
The classifier (:func:`morph.classify.load_model`), the localizer
(:func:`morph.localize.load_localizer`) and any later model (a teacher) open theirs here, so
a folder is found the same way everywhere and every error names the folder or file at fault.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .errors import MorphError
from .io import read_json, read_torch


def models_dir() -> Path:
    """Where model folders live: ``$MORPH_MODELS_DIR``, else ``<repo>/models``."""
    env = os.environ.get("MORPH_MODELS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "models"


def resolve_folder(path_or_name: str | os.PathLike[str] | None, default: str, kind: str = "model") -> Path:
    """The folder of ``path_or_name``: a folder path, else a name under :func:`models_dir`;
    ``None`` is the shipped ``default``. Raises ``model_not_found`` naming what was looked for.
    ``kind`` names the model in messages ("model", "localizer")."""
    if path_or_name is None:
        cand = models_dir() / default
        if not cand.is_dir():
            raise MorphError("model_not_found", f"the shipped default {kind} {default!r} is not in {models_dir()}",
                             path=str(cand))
        return cand
    p = Path(path_or_name)
    if p.is_dir():
        return p
    cand = models_dir() / str(path_or_name)
    if cand.is_dir():
        return cand
    raise MorphError(
        "model_not_found",
        f"no {kind} folder {str(path_or_name)!r} (looked in the current folder and {models_dir()})",
        path=str(path_or_name),
    )


@dataclass(frozen=True)
class ModelFolder:
    """One model folder on disk; its readers raise ``bad_model`` naming the file at fault.

    Attributes:
        path: the folder.
        kind: how messages name the model ("model", "localizer").
    """

    path: Path
    kind: str = "model"

    @classmethod
    def open(cls, path_or_name: str | os.PathLike[str] | None, default: str, kind: str = "model",
             required: Sequence[str] = ("config.json", "weights.pt")) -> ModelFolder:
        """Resolve the folder (see :func:`resolve_folder`) and check that ``required`` files exist."""
        folder = cls(resolve_folder(path_or_name, default, kind), kind)
        for name in required:
            if not (folder.path / name).is_file():
                raise folder.error(name, f"{kind} folder is missing {name}")
        return folder

    def error(self, name: str, message: str) -> MorphError:
        """A ``bad_model`` error about file ``name`` of this folder."""
        return MorphError("bad_model", message, path=str(self.path / name))

    def read(self, name: str) -> Any:
        """A JSON part of the folder."""
        return read_json(self.path / name)

    def read_optional(self, name: str) -> Any | None:
        """A JSON part of the folder, or None when the folder has none."""
        return read_json(self.path / name) if (self.path / name).is_file() else None

    def config(self) -> dict[str, Any]:
        """``config.json``: an object naming the architecture (``arch``)."""
        cfg = self.read("config.json")
        if not isinstance(cfg, dict) or "arch" not in cfg:
            raise self.error("config.json", "config.json must be an object with an 'arch'")
        return cfg

    def load_weights(self, net: nn.Module, name: str = "weights.pt") -> None:
        """Load ``name`` into ``net``; ``bad_model`` when it is missing or does not fit its architecture."""
        if not (self.path / name).is_file():
            raise self.error(name, f"{self.kind} folder is missing {name}")
        state = read_torch(self.path / name)
        try:
            net.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            raise self.error(name, f"weights do not match the architecture ({exc})") from exc
