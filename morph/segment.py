"""Cell localization (placeholder: Otsu + connected components).

Being replaced by the real stain-aware watershed localizer; the public contract
is :class:`SegmentConfig`, :class:`Segmentation` and :func:`segment_field`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from skimage import filters, measure, morphology

from .types import Cell

#: Micrometres per pixel of the Chula RBC-12 fields (placeholder value).
DEFAULT_UM_PER_PX = 0.1


@dataclass(frozen=True)
class SegmentConfig:
    min_rbc_diameter_um: float = 2.5


@dataclass
class Segmentation:
    cells: list[Cell] = field(default_factory=list)
    median_rbc_diameter_px: float | None = None
    warnings: list[str] = field(default_factory=list)


def segment_field(
    image: np.ndarray, um_per_px: float = DEFAULT_UM_PER_PX, config: SegmentConfig = SegmentConfig()
) -> Segmentation:
    rgb = image.astype(np.float32) / 255.0
    sat = rgb.max(axis=2) - rgb.min(axis=2)
    fg = sat > filters.threshold_otsu(sat)
    fg = morphology.remove_small_objects(fg, 50)
    lab = measure.label(fg)
    h, w = fg.shape
    cells: list[Cell] = []
    for r in measure.regionprops(lab):
        y0, x0, y1, x1 = r.bbox
        cy, cx = r.centroid
        d = r.equivalent_diameter_area
        cells.append(
            Cell(
                id=len(cells), x=cx, y=cy, bbox=(x0, y0, x1, y1), kind="rbc",
                area_px=float(r.area), diameter_px=float(d), eccentricity=float(r.eccentricity),
                touches_border=bool(x0 == 0 or y0 == 0 or x1 == w or y1 == h),
                diameter_um=float(d * um_per_px), mask=r.image.copy(),
            )
        )
    diam = [c.diameter_px for c in cells if c.kind == "rbc" and not c.touches_border]
    return Segmentation(cells=cells, median_rbc_diameter_px=float(np.median(diam)) if diam else None)
