"""Export the reviewed cells of a store as a labelled data set ``morph train`` reads.

``OUT/annotations.csv`` has the columns of the ``csv`` label format (``image,x,y,label``,
image paths relative to ``OUT``) plus ``confirmed`` (1: the reviewer agreed with the
model, 0: corrected) and provenance columns the reader ignores; ``OUT/images/`` holds
the stored images; ``OUT/export.json`` counts cells per class. Platelets are left out
(the classifier does not label them, and the label readers do not take them).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MorphError
from ..io import write_csv, write_json
from ..labels import PLATELET
from .blobs import make_group_readable
from .repository import CaseStore

ANNOTATIONS = "annotations.csv"
COLUMNS: tuple[str, ...] = ("image", "x", "y", "label", "confirmed", "um_per_px", "case_id", "image_index", "cell_id")


@dataclass
class ExportSummary:
    """What an export wrote: cells per class, confirmed vs corrected, images, cases and scales."""

    out: str
    cells: int = 0
    confirmed: int = 0
    corrected: int = 0
    images: int = 0
    cases: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    confirmed_per_class: dict[str, int] = field(default_factory=dict)
    um_per_px: list[float] = field(default_factory=list)
    platelets_left_out: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_reviewed(store: CaseStore, out: str | os.PathLike[str]) -> ExportSummary:
    """Write the reviewed cells (and their images) of ``store`` to ``out``.

    Images are copied first and the CSV written last (atomically), so an interrupted
    export never leaves a CSV naming missing images. ``MorphError("empty_dataset")``
    when no cell has been reviewed yet.
    """
    out_dir = Path(out)
    rows: list[tuple[Any, ...]] = []
    copied: set[str] = set()
    cases: set[str] = set()
    scales: set[float] = set()
    per_class: Counter[str] = Counter()
    confirmed: Counter[str] = Counter()
    platelets = 0
    for image, cell in store.reviewed_cells():
        if cell.label == PLATELET:
            platelets += 1
            continue
        name = f"images/{Path(image.file).name}"
        if name not in copied:
            _copy_image(store.image_file(image.file), out_dir / name)
            copied.add(name)
        label = str(cell.label)
        rows.append((name, cell.x, cell.y, label, int(cell.confirmed), image.um_per_px, cell.case_id,
                     cell.image_index, cell.cell_id))
        cases.add(cell.case_id)
        scales.add(image.um_per_px)
        per_class[label] += 1
        confirmed[label] += int(cell.confirmed)
    if not rows:
        raise MorphError("empty_dataset", "no reviewed cell in this store yet; review cases first", path=str(store.folder))
    write_csv(out_dir / ANNOTATIONS, COLUMNS, rows)
    make_group_readable(out_dir / ANNOTATIONS)
    n_confirmed = sum(confirmed.values())
    summary = ExportSummary(
        out=str(out_dir), cells=len(rows), confirmed=n_confirmed, corrected=len(rows) - n_confirmed,
        images=len(copied), cases=len(cases), per_class=dict(sorted(per_class.items())),
        confirmed_per_class={k: v for k, v in sorted(confirmed.items()) if v}, um_per_px=sorted(scales),
        platelets_left_out=platelets,
    )
    write_json(out_dir / "export.json", summary.to_dict())
    make_group_readable(out_dir / "export.json")
    return summary


def _copy_image(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise MorphError("file_not_found", "a stored image is missing from the store folder", path=str(src))
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return  # content-addressed: same name, same bytes
    dst.parent.mkdir(mode=0o777, parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    make_group_readable(tmp)
    os.replace(tmp, dst)
