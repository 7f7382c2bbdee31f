"""Step 2: the cell mask: hysteresis thresholds of the summed optical density, pale rims
closed, the central pallor filled."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology

from .arrays import resize_to
from .config import SegmentConfig
from .glass import glass_level, glass_spread, optical_density


def _otsu(values: np.ndarray) -> float:
    try:
        return float(filters.threshold_otsu(values))
    except ValueError:
        return float(values.max()) if values.size else 0.0


def hysteresis_thresholds(raw: np.ndarray, cfg: SegmentConfig, valid: np.ndarray | None = None) -> tuple[float, float, float]:
    """(low, high, glass level) hysteresis thresholds of the summed optical density ``raw``.

    High: Otsu, repeated below itself while the class above it is a small minority (dark
    nuclei or a scratch would otherwise lift it above pale red cells), never into the glass
    noise. Low: just above the glass noise, so pale rims join their cell. Only the ``valid``
    pixels (when given: not a painted blank area) are measured and split: a white patch painted
    glass is no glass of the smear; counted as such it made the cells a "small minority" (and
    moved the glass level), which sent the threshold into the glass.
    """
    level, noise = glass_level(raw, valid)
    values = raw if valid is None else raw[valid]
    sig = np.maximum(values - level, 0.0)
    clip = float(np.percentile(sig, 99.5))
    # the clip keeps a few very dark nuclei from pulling the split up; but when the cells
    # themselves are under 0.5% of the field (one or two on a large field) it clips them
    # away, and the split falls into the glass: then the values are split as they are
    hi = _otsu(np.minimum(sig, clip) if clip >= cfg.min_contrast_od else sig)
    # the floor: above the pixel noise and above the glass's own unevenness (on a sparse field,
    # where the cells are a small minority, the re-splits otherwise reached the glass and grew
    # field-sized "cells" out of it)
    floor = max(cfg.seed_noise_k * noise, cfg.glass_spread_k * glass_spread(values, level, noise))
    # ...and never below the density that holds no stained cells at all: one or two cells on a
    # large field are under the 0.5% clipped above, so the first split fell into the glass
    # texture, as did the re-splits where glass texture outweighs the few cells. (The first
    # split may sit under the floor: on a crowded field the "glass" below the level is cells.)
    lowest = max(floor, cfg.min_contrast_od)
    hi = max(hi, cfg.min_contrast_od)
    for _ in range(3):
        above = float((sig > hi).mean())
        if above >= cfg.min_cell_fraction:
            break
        # re-split only when more is stained between the noise floor and the threshold
        # (pale red cells) than above it (nuclei, a scratch)
        between = float(((sig > lowest) & (sig <= hi)).mean())
        if between < above:
            break
        below = sig[sig < hi]
        if below.size < 16:
            break
        nxt = _otsu(below)
        if nxt < lowest:
            # never into the glass noise; but when far more is stained between the floor and
            # the threshold than above it, the threshold passes only specks (a field of pale
            # cells whose next split lands just under the floor): the floor it is. So too when
            # that band alone holds a cell-sized share of the field: sensor noise raises the
            # floor and shrinks the band, and a pale field kept a nucleus-level threshold
            # (Chula field 32 under noise sigma 16: 2% of the field found, recall 0.97 -> 0.07)
            if between > cfg.floor_fallback_ratio * above or between >= cfg.min_cell_fraction:
                hi = lowest
            break
        hi = nxt
    lo = max(cfg.noise_k * noise, cfg.low_high_ratio * hi)
    lo = max(lo, 0.25 * cfg.min_contrast_od)
    hi = max(hi, lo + 1e-3)
    return level + lo, level + hi, level


def spans_several_areas(shape: tuple[int, ...], r: float, cfg: SegmentConfig) -> bool:
    """Whether a field of ``shape`` (rows, columns) is at least two ``local_threshold_tile``
    typical radii ``r`` across both ways: a stitched scan or a mosaic, whose slide areas may
    differ in stain and glass (a 640x480 Chula field is ~32 radii wide: one area)."""
    side = cfg.local_threshold_tile * r
    return side > 0 and min(int(shape[0] // side), int(shape[1] // side)) >= 2


def local_thresholds(raw: np.ndarray, r: float, cfg: SegmentConfig, whole: tuple[float, float, float],
                     valid: np.ndarray | None = None) -> np.ndarray | None:
    """(ny, nx, 2) low and high thresholds of each tile of ``cfg.local_threshold_tile`` typical
    radii ``r`` of the summed density ``raw`` (None when the field is under two tiles across).

    A tile mostly blank, or with under ``local_min_stained`` of it above its own high threshold
    (glass, a few cells), keeps the ``whole`` field's thresholds.
    """
    if not spans_several_areas(raw.shape, r, cfg):
        return None
    side = cfg.local_threshold_tile * r
    h, w = raw.shape
    ny, nx = int(h // side), int(w // side)
    tiles = np.empty((ny, nx, 2), np.float32)
    tiles[...] = whole[:2]
    ys, xs = np.linspace(0, h, ny + 1).astype(int), np.linspace(0, w, nx + 1).astype(int)
    for i in range(ny):
        for j in range(nx):
            part = raw[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
            ok = None if valid is None else valid[ys[i]:ys[i + 1], xs[j]:xs[j + 1]]
            if ok is not None and ok.mean() < 0.5:
                continue
            lo, hi, _ = hysteresis_thresholds(part, cfg, ok)
            stained = part > hi if ok is None else (part > hi) & ok
            if stained.mean() >= cfg.local_min_stained:
                tiles[i, j] = lo, hi
    return tiles


def threshold_maps(tiles: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The low and high threshold maps of ``shape``, blended bilinearly between tile centres."""
    maps = resize_to(tiles, shape)
    return maps[..., 0], maps[..., 1]


def _fill_small_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Fill background holes of at most ``max_area`` pixels (pallor, hollow pale cells)."""
    lab, n = ndi.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    small = sizes <= max_area
    small[0] = False
    # a hole touching the image border is background, not a hole
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    small[edge] = False
    return mask | small[lab]


def foreground(
    rgb: np.ndarray, bg: np.ndarray, r: float | None, cfg: SegmentConfig,
    thresholds: tuple[float, float, float] | None = None,
    density: tuple[np.ndarray, np.ndarray] | None = None, valid: np.ndarray | None = None,
    local: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Optical density (H, W, 3), summed density above glass, cell mask and the thresholds.

    Hysteresis thresholds from :func:`hysteresis_thresholds` (measured on the coarse pass and reused);
    when the cell radius ``r`` is known, gaps in pale rims are closed and the pallor filled.
    ``density`` is :func:`optical_density` of the same image and glass map, when already computed;
    ``valid`` the pixels the thresholds are measured on (None: all); ``local`` the tiles of
    :func:`local_thresholds`, which replace the low and high thresholds (the returned ones stay
    the whole field's).
    """
    od_signed, raw = density if density is not None else optical_density(rgb, bg)
    lo, hi, level = thresholds if thresholds is not None else hysteresis_thresholds(raw, cfg, valid)
    sig = np.maximum(raw - level, 0.0)
    lo_px, hi_px = (lo, hi) if local is None else threshold_maps(local, raw.shape)
    fg = filters.apply_hysteresis_threshold(raw, lo_px, hi_px)
    fg = ndi.binary_opening(fg)
    if r is None:
        fg = _fill_small_holes(fg, sig.size / 200.0)
    else:
        rad = max(1, int(round(cfg.ring_close * r)))
        fg = fg | ndi.binary_closing(fg, morphology.disk(rad), border_value=0)
        fg = _fill_small_holes(fg, cfg.max_hole_area * math.pi * r * r)
    return np.maximum(od_signed, 0.0), sig, fg, (lo, hi, level)
