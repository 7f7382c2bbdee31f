"""Step 7a, the field's scale: the stated one, else the default one, unless no scale was stated
and the default makes the median red cell impossible.

A lab that uploads fields without ``um_per_px`` gets the Chula RBC-12 scale. On a camera or
objective with another magnification that makes every red cell a "macrocyte" (TXL-PBC fields
read a median of 15.7 um at it) or a "microcyte", and the case report then ranks B12 deficiency
or iron deficiency on a size that is only the camera's. No disease moves the *median* red cell
outside ``plausible_rbc_um`` (5-10 um; MCV 60-130 fL gives ~6-9 um on a film), so outside it
the default scale is the wrong one: the scale is then taken from the cells themselves, so that
the median red cell measures what a normal one measures at the Chula scale, and the field says
so. Sizes are then relative to the field's own cells: a case-wide macro- or microcytosis cannot
be seen (the warning says to give ``um_per_px``). A stated scale is never replaced, however
implausible the size it gives (the warning says so; a lab's own scale is its call).

The fields of one case come from one microscope: with no scale stated they share one scale
(:func:`shared_scale`), decided on their red cells pooled, so that a case's fields are never
measured at two scales (bcd-256's four golden fields, all at one magnification, read medians
of 9.2-12.0 um at the default scale: two were estimated and two kept the default, and the
latter's cells became "macrocytes"). A field whose own median lies far from the case's
(``scale_share_tolerance``: another objective) keeps its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..types import Cell
from .config import SegmentConfig


@dataclass(frozen=True)
class FieldScale:
    """The scale a field's sizes are given at, where it came from (``"stated"``, ``"default"``
    or ``"estimated"``) and, when estimated, why."""

    um_per_px: float
    source: str
    note: str | None = None


def field_scale(median_px: float | None, n_rbc: int, um_per_px: float, stated: bool, cfg: SegmentConfig,
                subject: str = "this field") -> FieldScale:
    """The field's scale (see the module docstring).

    Args:
        median_px: the median diameter (px) of the field's red cells not cut by the border (None:
            no red cell, or no cell at all).
        n_rbc: how many red cells that median is taken over; under ``cfg.scale_min_cells`` the
            median is too noisy to replace a scale with.
        um_per_px: the stated scale, or the default one when none was stated.
        stated: whether ``um_per_px`` was stated by the caller.
        subject: whose cells the note speaks of ("this field", or a case's fields).
    """
    if stated:
        return FieldScale(um_per_px, "stated")
    if median_px is None or n_rbc < cfg.scale_min_cells or plausible_size(median_px, um_per_px, cfg):
        return FieldScale(um_per_px, "default")
    lo, hi = cfg.plausible_rbc_um
    estimated = cfg.normal_rbc_um / median_px
    note = (
        f"no scale was given and the default ({um_per_px:g} um/px) made the median red cell "
        f"{median_px * um_per_px:.1f} um, which no disease does (expected {lo:g}-{hi:g} um): the scale was "
        f"estimated from the cells ({estimated:.3g} um/px, the median red cell taken as {cfg.normal_rbc_um:g} um); "
        f"sizes are relative to {subject}'s own cells, so macro- or microcytosis cannot be judged: give um_per_px"
    )
    return FieldScale(estimated, "estimated", note)


def plausible_size(median_px: float, um_per_px: float, cfg: SegmentConfig) -> bool:
    """Whether a median red cell of ``median_px`` pixels measures within ``cfg.plausible_rbc_um``
    at ``um_per_px``: the one test behind both estimating a scale and warning about it."""
    lo, hi = cfg.plausible_rbc_um
    return lo <= median_px * um_per_px <= hi


def scaled(cells: list[Cell], scale: FieldScale) -> list[Cell]:
    """The cells with their diameters in micrometres at ``scale`` (copies: a Segmentation that
    still holds the old cells keeps sizes that match its own scale)."""
    return [replace(c, diameter_um=float(c.diameter_px * scale.um_per_px)) for c in cells]


def shared_scale(diameters_px: Sequence[Sequence[float]], um_per_px: float,
                 cfg: SegmentConfig) -> tuple[FieldScale, list[bool]]:
    """The scale a case's fields share when none was stated, and which fields share it.

    Decided on the red cells (diameters in px, cells cut by the border left out) of the fields
    that agree, pooled: the fields whose own median lies within ``scale_share_tolerance`` of
    the pooled median of all, then of those alone (a field at another magnification must not
    pull the case's scale). Fields with too few cells to say share it too."""
    cells = [np.asarray(d, float) for d in diameters_px]
    few = [d.size < cfg.scale_min_cells for d in cells]

    def agreeing(median: float | None) -> list[bool]:
        return [f or median is None or abs(float(np.median(d)) / median - 1.0) <= cfg.scale_share_tolerance
                for d, f in zip(cells, few, strict=True)]

    def pooled(use: list[bool]) -> np.ndarray:
        chosen = [d for d, u in zip(cells, use, strict=True) if u and d.size]
        return np.concatenate(chosen) if chosen else np.zeros(0)

    every = pooled([True] * len(cells))
    shares = agreeing(float(np.median(every)) if every.size else None)
    common = pooled(shares)
    median = float(np.median(common)) if common.size else None
    shares = agreeing(median)
    subject = f"the case's {sum(shares)} fields" if sum(shares) > 1 else "this field"
    return field_scale(median, int(common.size), um_per_px, False, cfg, subject=subject), shares


__all__ = ["FieldScale", "field_scale", "plausible_size", "scaled", "shared_scale"]
