"""Unlabelled real cells for distillation: what the localizer finds on fields nobody labelled
cell by cell.

The student learns the teacher's reading of cells it will meet at a lab: the red cells of
TXL-PBC (boxes, no morphology labels), the training part of bcd-256 (a third laboratory) and
the cells of Chula training fields that carry no point label. Cells are found exactly as at
inference (:func:`morph.segment.segment_field` with the shipped centre-map localizer, at the
source's scale or the default one), so the student is taught on the crops it will be given.
Validation images (Chula's split, bcd-256's held-out test part) are never harvested.

The harvest (field path, scale, stain, centres, kinds) is cached as JSON so the teacher's
soft labels and the student's crops are cut from the same cells at each model's own scale.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from morph.classify import Preprocessing, extract_crops
from morph.data import CropSet
from morph.errors import MorphError
from morph.io import IMAGE_SUFFIXES, read_image, write_json

log = logging.getLogger("training.unlabelled")

#: How each format lists its fields.
FORMATS: tuple[str, ...] = ("chula", "yolo", "images")


@dataclass
class UnlabelledSource:
    """A folder of fields whose cells are used without labels. ``path`` is relative to the data root."""

    name: str
    format: str  # "chula" (images/ + labels/ points: labelled cells are skipped) | "yolo" | "images"
    path: str
    split: str | None = None  # YOLO sub-split folder ("train")
    max_fields: int = 200
    um_per_px: float | None = None  # None -> the default (Chula) scale, as an unscaled upload
    stain: str = "wright"
    #: skip fields whose number is divisible by this (bcd-256's held-out test part: 3)
    holdout_every: int | None = None


@dataclass
class FieldCells:
    """The cells found on one unlabelled field."""

    image_path: str
    um_per_px: float
    stain: str
    source: str
    centres: list[tuple[float, float]] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


def _base(src: UnlabelledSource, root: Path) -> Path:
    return Path(src.path) if Path(src.path).is_absolute() else root / src.path


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def _field_number(path: Path) -> int | None:
    m = re.search(r"(\d+)$", path.stem)
    return int(m.group(1)) if m else None


def list_fields(src: UnlabelledSource, root: Path, excluded_stems: set[str]) -> list[Path]:
    """The fields of ``src`` that may be harvested: not excluded, not held out, every k-th up to ``max_fields``."""
    if src.format not in FORMATS:
        raise MorphError("bad_config", f"unlabelled source {src.name}: format must be one of {', '.join(FORMATS)}",
                         path=src.name)
    base = _base(src, root)
    folder = base / "images" / (src.split or "") if src.format in ("chula", "yolo") else base
    paths = [p for p in _image_files(folder) if p.stem not in excluded_stems]
    if src.holdout_every:
        paths = [p for p in paths if (n := _field_number(p)) is None or n % src.holdout_every != 0]
    step = max(1, len(paths) // max(1, src.max_fields))
    return paths[::step][: src.max_fields]


def labelled_centres(src: UnlabelledSource, root: Path) -> dict[str, np.ndarray]:
    """A Chula source's labelled centres per image stem, read by the Chula reader (those cells
    are in the labelled set already); other formats label no cell."""
    if src.format != "chula":
        return {}
    from morph.readers import read_chula_points

    by_stem: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for p in read_chula_points(_base(src, root)).points:
        by_stem[Path(p.image_path).stem].append((p.x, p.y))
    return {stem: np.array(xy, float) for stem, xy in by_stem.items()}


def harvest_field(src: UnlabelledSource, path: Path, localizer: Any, labelled: np.ndarray,
                  skip_radius_px: float = 15.0) -> FieldCells:
    """Find the cells of one field; drop cells cut by the border and cells within
    ``skip_radius_px`` of a ``labelled`` (n, 2) centre."""
    from morph.segment import DEFAULT_UM_PER_PX, segment_field

    um = float(src.um_per_px or DEFAULT_UM_PER_PX)
    seg = segment_field(read_image(path), um_per_px=um, centres=localizer)
    out = FieldCells(str(path), um, src.stain, src.name)
    for c in seg.cells:
        if c.kind not in ("rbc", "nucleated") or c.touches_border:
            continue
        if len(labelled) and float(np.min(np.hypot(labelled[:, 0] - c.x, labelled[:, 1] - c.y))) < skip_radius_px:
            continue
        out.centres.append((round(float(c.x), 2), round(float(c.y), 2)))
        out.kinds.append(c.kind)
    return out


def harvest(
    sources: Sequence[UnlabelledSource], root: Path, excluded_stems: set[str],
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> list[FieldCells]:
    """Every source's fields, harvested with the shipped localizer; an unreadable field is logged and skipped."""
    from morph.localize import load_localizer

    localizer = load_localizer()
    out: list[FieldCells] = []
    for src in sources:
        paths = list_fields(src, root, excluded_stems)
        labelled = labelled_centres(src, root)
        it: Iterable[Path] = progress(paths) if progress else paths
        for p in it:
            try:
                out.append(harvest_field(src, p, localizer, labelled.get(p.stem, np.zeros((0, 2)))))
            except MorphError as exc:
                log.warning("unlabelled field %s skipped: %s", p, exc.message)
        log.info("unlabelled %s: %d fields, %d cells", src.name, len(paths),
                 sum(len(f.centres) for f in out if f.source == src.name))
    return out


def save_harvest(fields: Sequence[FieldCells], path: Path) -> None:
    write_json(path, [asdict(f) for f in fields])


def load_harvest(path: Path) -> list[FieldCells]:
    return [FieldCells(**{**d, "centres": [tuple(c) for c in d["centres"]]}) for d in json.loads(path.read_text())]


def cut_unlabelled(fields: Sequence[FieldCells], pre: Preprocessing) -> CropSet:
    """Crops of the harvested cells at ``pre``'s physical scale (label ``""``: unlabelled)."""
    crops: list[np.ndarray] = []
    kinds: list[str] = []
    stains: list[str] = []
    groups: list[str] = []
    sources: list[str] = []
    for f in fields:
        if not f.centres:
            continue
        crops.append(extract_crops(read_image(f.image_path), f.centres, f.um_per_px, pre, f.kinds))
        n = len(f.centres)
        kinds += f.kinds
        stains += [f.stain] * n
        groups += [f"{f.source}:{Path(f.image_path).stem}"] * n
        sources += [f.source] * n
    s = pre.crop_size
    arr = np.concatenate(crops) if crops else np.zeros((0, s, s, 3), np.uint8)
    return CropSet(arr, [""] * len(arr), groups, kinds, stains, sources, [])
