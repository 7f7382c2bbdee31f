"""Step 1: the glass colour (a smooth per-pixel map that follows vignetting, gradients and the
tint of the glass) and the optical density of each channel against it."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .arrays import block_mean, resize_to
from .config import SegmentConfig


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """Background (glass) colour: the median colour of the brightest well-populated mode."""
    # every other pixel in each direction: the histogram mode and its median colour are the
    # same, at a quarter of the cost
    sub = rgb[::2, ::2] if min(rgb.shape[:2]) >= 64 else rgb
    grey = sub.mean(axis=2).ravel()
    hist, edges = np.histogram(grey, bins=64, range=(0.0, 256.0))
    hist = ndi.uniform_filter1d(hist.astype(np.float64), 3)
    ok = np.nonzero(hist >= 0.08 * hist.max())[0]
    peak = int(ok[-1])
    while peak < 63 and hist[peak + 1] > hist[peak]:
        peak += 1
    while peak > 0 and hist[peak - 1] > hist[peak]:
        peak -= 1
    lo, hi = edges[max(peak - 1, 0)], edges[min(peak + 2, 64)]
    sel = (grey >= lo) & (grey < hi)
    flat = sub.reshape(-1, 3)
    bg = np.median(flat[sel], axis=0) if sel.any() else np.percentile(flat, 90, axis=0)
    return np.maximum(bg.astype(np.float32), 8.0)


def background_map(rgb: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """Per-pixel glass colour (H, W, 3): uneven illumination and stain tint normalised away.

    The global glass colour gives a first glass mask (pixels not darker than the glass mode
    plus its spread); the glass colour is then interpolated over the cells by normalised
    convolution on a coarse grid, twice, so vignetting and gradients are followed. The second
    glass mask is taken against a map that follows a quadratic illumination trend fitted to the
    first one (:func:`_glass_trend`), so darkened corners are recognised as glass instead of
    growing irregular "cells" out of the field edge.
    """
    bg0 = background_colour(rgb)
    coarse = np.broadcast_to(bg0, (1, 1, 3)).astype(np.float32)
    g = max(1, max(rgb.shape[:2]) // 40)
    # summed optical density = log(product of glass channels) - log(product of pixel channels):
    # the pixel term is computed once, the glass term on the coarse grid
    log_px = np.log(np.maximum(rgb, 1.0)).sum(axis=2)
    for first, tol in ((True, cfg.glass_tolerance), (False, 3.0)):
        log_bg = np.log(np.maximum(coarse, 8.0)).sum(axis=2, keepdims=True)
        if log_bg.shape[:2] == (1, 1):
            raw = float(log_bg[0, 0, 0]) - log_px
        else:
            raw = resize_to(log_bg, rgb.shape[:2])[:, :, 0] - log_px
        if first:  # the pixels that measure the glass, read against the global glass colour
            unclipped = _unclipped(rgb, raw)
        level, noise = glass_level(raw, unclipped)
        spread = glass_spread(raw if unclipped is None else raw[unclipped], level, noise)
        # capped, so that in a crowded field the cells never pass for glass
        glass = (raw < level + min(tol * max(spread, noise), cfg.glass_max_od)).astype(np.float32)
        if glass.mean() < 0.05:
            break
        gl = block_mean(glass, g)
        col = block_mean(rgb * glass[:, :, None], g)
        sigma = max(gl.shape) / 10.0
        wsum = ndi.gaussian_filter(gl, sigma, mode="nearest")
        # after the first pass the next glass mask is taken against the trend-corrected map,
        # which follows vignetting into the corners; the colours returned (second pass) come
        # from the glass pixels alone
        trend = _glass_trend(gl, col) if first else None
        rel = col if trend is None else col / trend
        num = ndi.gaussian_filter(rel, (sigma, sigma, 0), mode="nearest")
        fallback = bg0 if trend is None else 1.0
        coarse = np.where(wsum[:, :, None] > 0.02, num / np.maximum(wsum, 1e-6)[:, :, None], fallback)
        if trend is not None:
            coarse = coarse * trend
        coarse = coarse.astype(np.float32)
    if coarse.shape[:2] == (1, 1):
        return np.broadcast_to(np.maximum(coarse, 8.0), rgb.shape).astype(np.float32)
    return np.maximum(resize_to(coarse, rgb.shape[:2]), 8.0)


def follow_glass_steps(bg: np.ndarray, od_signed: np.ndarray, r: float, cfg: SegmentConfig) -> np.ndarray:
    """The glass map ``bg`` (and ``od_signed``, the per-channel density of the field against it,
    from :func:`optical_density`) corrected where the glass itself steps from one area to
    the next (a mosaic of fields imaged apart, tiles of a scan under different light).

    :func:`background_map` takes the glass from the brightest well-populated mode and follows
    it smoothly; a tile whose glass lies far from that mode (Chula field 2, summed density
    +0.85 above the median field's glass; field 713, -1.05) is read as all cells or as pale
    glass, and the 4000x3000 mosaic of 40 Chula fields lost 7% of its cells there. What the
    map leaves of the glass is the lowest density near each pixel: per channel, the grey
    opening over ``glass_step_reach`` typical radii ``r`` (the glass between the cells,
    spread back over them), which follows a step to within that reach. Steps and smooth
    trends alike are taken out; on glass the map already fits, only the noise floor moves
    (absorbed by the glass level the thresholds measure)."""
    od = ndi.gaussian_filter(od_signed, (1.0, 1.0, 0))
    size = 2 * max(1, int(round(cfg.glass_step_reach * r))) + 1
    left = np.stack([ndi.grey_opening(od[..., i], size=(size, size)) for i in range(od.shape[2])], axis=-1)
    return np.maximum(bg * np.exp(-left), 8.0).astype(np.float32)


def _unclipped(rgb: np.ndarray, raw: np.ndarray) -> np.ndarray | None:
    """The pixels with no channel at the sensor's ceiling, or None when clipping is rare or
    covers most of the field. Over-exposed glass sits flat at the ceiling: it has no noise
    and nothing brighter than the mode, so counted as glass it shrank the glass's measured
    spread and the glass mask lost the vignetted edges (a frame of false cells there).

    ``raw`` is the summed density against the global glass colour: where one channel alone is
    at the ceiling over nearly all the glass (:data:`_GLASS_LEFT`; a tinted glass whose
    brightest channel sits there, as after a saturation boost of a peach TXL-PBC field), the
    glass keeps its noise in the other two channels, and dropping those pixels left only the
    cells to measure the glass by: the glass map took the cells' colour (summed density
    -0.1 on the glass), the foreground shrank to the white cell and the radius read ~1.7x
    (TXL-PBC test fields 3, 11, 17 under saturation x1.4). Only pixels with two channels at
    the ceiling (flat glass) are then left out."""
    at_ceiling = (rgb >= 254.5).sum(axis=2)
    clipped: np.ndarray = np.asarray(at_ceiling >= 1)
    level, _ = glass_level(raw)
    glass = raw < level + _GLASS_BAND
    if (glass & ~clipped).sum() < _GLASS_LEFT * glass.sum():
        clipped = np.asarray(at_ceiling >= 2)
    share = float(clipped.mean())
    # beyond 60% the pixels left are mostly cells, whose mode is no glass level (TXL fields
    # at brightness x1.15 then found cells in the glass)
    return np.logical_not(clipped) if 0.01 <= share <= 0.6 else None


#: summed optical density above the glass mode that still counts as glass when asking how much
#: of it a clipped channel covers (the glass's own spread is ~0.01-0.04; the palest cells ~0.2)
_GLASS_BAND = 0.1
#: the least share of that glass left with no channel at the ceiling for clipped pixels to be
#: left out whole (ring field 3 at brightness x1.15: 0.43; saturation x1.4 on TXL-PBC: <= 0.06)
_GLASS_LEFT = 0.25


def glass_spread(values: np.ndarray, level: float, noise: float) -> float:
    """The spread of the glass about its ``level``: the root mean square of the values below it
    (only glass lies below the glass level; above it, the cells), or ``noise`` when too few."""
    below = values[values < level] - level
    return float(np.sqrt(np.mean(below * below))) if below.size > 16 else noise


def _glass_trend(gl: np.ndarray, col: np.ndarray) -> np.ndarray | None:
    """Smooth illumination trend of the glass on the coarse grid: a quadratic surface in log
    colour fitted to the blocks that are mostly glass (vignetting, gradients), so the glass
    colour is extrapolated correctly into corners that the cells or the darkening hide.
    None when too few glass blocks exist for a stable fit."""
    sel = gl > 0.5
    if int(sel.sum()) < 24:
        return None
    h, w = gl.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy / max(h - 1, 1) - 0.5, xx / max(w - 1, 1) - 0.5
    basis = np.stack([np.ones_like(xx), xx, yy, xx * xx, xx * yy, yy * yy], axis=-1)
    a = basis[sel] * gl[sel, None]
    b = np.log(np.maximum(col[sel] / gl[sel, None], 1.0)) * gl[sel, None]
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    return np.exp(basis @ coef).astype(np.float32)


def glass_level(raw: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """(level, noise) of the glass in a summed-OD map: the histogram mode, and the pixel noise
    (robust spread of neighbour differences, which slow illumination changes do not inflate).
    Only the ``valid`` pixels count when given (a blank area painted glass has its own level)."""
    big = min(raw.shape) >= 64
    sub = raw[::2, ::2] if big else raw
    d = np.abs(raw[:, 1:] - raw[:, :-1])
    if valid is not None:
        sub = sub[valid[::2, ::2] if big else valid]
        d = d[valid[:, 1:] & valid[:, :-1]]
    lo_, hi_ = np.percentile(sub, [0.5, 60.0])
    # the glass colour was estimated beforehand, so its level is near 0 even where cells
    # outnumber glass pixels
    lo_, hi_ = max(float(lo_), -0.25), min(float(hi_), 0.25)
    noise = max(1.4826 * float(np.median(d)) / math.sqrt(2.0), 1e-3) if d.size else 0.02
    if hi_ - lo_ < 1e-6:
        return float(hi_), noise
    hist, edges = np.histogram(sub, bins=100, range=(float(lo_), float(hi_)))
    hist = ndi.uniform_filter1d(hist.astype(np.float64), 5)
    i = int(np.argmax(hist))
    return float(0.5 * (edges[i] + edges[i + 1])), noise


def optical_density(rgb: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed optical density per channel (H, W, 3) and its smoothed sum (H, W)."""
    od_signed = np.log(bg / np.maximum(rgb, 1.0))
    return od_signed, ndi.gaussian_filter(od_signed.sum(axis=2), 1.0)
