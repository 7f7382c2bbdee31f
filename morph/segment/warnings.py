"""Step 7, warnings a person should read: no cells (blank slide), an implausible median red-cell
size for the stated scale (never rescaled: a global shift may be macro/microcytosis), an
out-of-focus field, a very dense one, a mostly blank one."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..types import Cell
from .calibration import plausible_size
from .config import SegmentConfig


def focus_measure(grey: np.ndarray) -> float:
    """Laplacian energy relative to the field's contrast (scale-free at the working scale)."""
    if grey.size < 16:
        return 0.0
    lap = ndi.laplace(grey)
    var = float(grey.var())
    if var < 1e-6:
        return 0.0
    return float(lap.var() / var)


def stained_fraction(mask: np.ndarray, raw: np.ndarray, thr: tuple[float, float, float]) -> float:
    """The foreground's share of the field, or that of every pixel darker than the glass (pale
    centres of piled-up cells included), whichever is larger."""
    return max(float(mask.mean()), float((raw > thr[0] - thr[2]).mean()))


def size_warning(med: float | None, um_per_px: float, cfg: SegmentConfig) -> str | None:
    """The warning when the median red-cell diameter ``med`` (px) is implausible at ``um_per_px``."""
    if med is None or plausible_size(med, um_per_px, cfg):
        return None
    lo, hi = cfg.plausible_rbc_um
    med_um = med * um_per_px
    return (f"median red-cell diameter {med_um:.1f} um is implausible for the stated scale "
            f"({um_per_px:g} um/px; expected {lo:g}-{hi:g} um): check um_per_px; a global size "
            "shift may itself be macro/microcytosis (sizes were not rescaled)")


#: what each field warning opens with (the texts below and the "no cells found: ..." reasons of
#: :func:`.field.segment_field`), under a short code that callers count by: the text may be
#: reworded, the code stays
WARNING_CODES: dict[str, str] = {
    "no cells found": "no_cells",
    "very dense field": "very_dense",
    "field looks out of focus": "out_of_focus",
    "most of the field": "mostly_blank",
    "median red-cell diameter": "implausible_size",
}


def warning_code(warning: str) -> str | None:
    """The code of a field's warning (:data:`WARNING_CODES`), None for any other note (the
    scale estimate's)."""
    return next((code for start, code in WARNING_CODES.items() if warning.startswith(start)), None)


def field_warnings(cells: list[Cell], focus: float, stained: float, cfg: SegmentConfig,
                   blank: float = 0.0) -> list[str]:
    """The warnings of a field with cells found, but for its scale (``blank``: the fraction of
    the field that was blank)."""
    warnings: list[str] = []
    if blank > cfg.mostly_blank:
        warnings.append(f"most of the field ({100 * blank:.0f}%) is blank (white, padded or transparent): "
                        "cells were sought in the rest only")
    if not cells:
        warnings.append("no cells found (blank slide or unstained field?)")
    if cells and focus < cfg.min_focus:
        warnings.append(f"field looks out of focus (focus measure {focus:.3f}); shapes and counts are less reliable")
    if stained > cfg.dense_fraction:
        warnings.append(
            f"very dense field: cells cover {100 * stained:.0f}% of it and overlap heavily; "
            "splitting and counts are less reliable"
        )
    return warnings
