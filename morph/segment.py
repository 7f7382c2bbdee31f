"""Cell localization: stain-aware foreground, size-adaptive seeds, watershed.

:func:`segment_field` finds red cells, nucleated cells and platelets in one RGB field
(scikit-image/scipy; torch only inside an optional learned centre map):

1. **Glass colour and optical density.** The glass colour is the brightest well-populated
   colour mode, refined into a smooth per-pixel map (normalised convolution of the glass
   pixels on a coarse grid, two passes) so vignetting, gradients and the tint of the glass
   (pale blue in Chula, cream in TXL-PBC) cancel out; the second glass mask is taken
   against a quadratic trend fitted to the glass, so it reaches into vignetted corners. Each channel becomes an optical density
   ``log(glass / pixel)``; their sum is the stain signal.
2. **Foreground.** Hysteresis threshold: the high threshold is Otsu's, re-estimated below
   itself while a dark minority (nuclei, a scratch) dominates and paler cells lie between it
   and the glass noise; the low one sits just above the glass noise so pale rims join their
   cell. Small gaps in rims are closed and the central pallor is filled.
3. **Adapting to magnification.** The typical red-cell radius ``r`` is measured per image
   (weighted median of each object's maximum distance to the glass; a clump holding a
   white cell contributes the distance peaks of its red cells instead, pallor holes filled)
   and the field is block-averaged so ``r`` is ~11 px; every size rule below is in units
   of ``r`` (seed spacing, hole size, debris, platelets), so fields at 40x-100x are treated
   alike. Sizes reported (px, um) are in the original pixels, and ``um`` uses the *stated*
   scale, never the measured cell size.
4. **Nuclei.** Dark-violet pixels (green absorbed, blue transmitted; well above the red-cell
   level) grouped by a closing of ``0.35 r`` make one nucleated cell each (a neutrophil's
   lobes are one cell). It owns the stained pixels within ``0.9 r`` of its nucleus, and
   red-cell seeds are sought only outside that zone, so red cells touching a white cell keep
   their own seeds instead of being flooded by it; small left-over regions lying almost wholly
   within ``1.4 r`` of a nucleus (cytoplasm crescents) join the nucleated cell.
5. **Seeds and watershed.** With a learned centre map (``centres=``, a
   :class:`morph.localize.CentreDetector`; the shipped pipeline uses ``models/locnet-v1``),
   its red-cell peaks are the seeds, nuclear groups holding two nucleated-cell centres are
   split between them and platelet centres pressed against a red cell get seeds of their
   own; the watershed floods outwards from the seeds (distance from the nearest seed minus
   the distance transform), and a red-cell region no centre seeded (a k-means split piece,
   an object without a seed) must be large to count (``unseeded_min_area``). Without one
   (hand-made seeds), circle centres voted by the outline (radial symmetry) find pale
   ring-like and overlapping cells, distance-transform maxima add the rest, and a watershed
   on the distance transform splits touching cells. A small region cut from a cell by a second
   seed (same convex body, long shared border) is joined back to it. Regions much larger than the typical one
   and clearly non-convex (overlapping cells the seeds missed) are split by k-means.
6. **Kinds.** Small regions that are more violet than the red cells are platelets
   (label ``"platelet"``), as are platelet-sized ones of any colour; smaller specks are
   debris and dropped; regions cut by the
   image edge are kept with ``touches_border=True`` (and left out of the median diameter).
7. **Warnings**: no cells (blank slide), implausible median red-cell size for the stated
   scale (never rescaled: a global shift may be macro/microcytosis), out-of-focus field
   (Laplacian energy relative to contrast at the working scale), very dense field.

**Default scale.** :data:`DEFAULT_UM_PER_PX` is the scale of the Chula RBC-12 fields,
measured, not taken from the data set's README: over all 528 fields, the median equivalent
diameter of the detected cells holding a point labelled *normal* (class 0) is 42.0 px
(5,293 of the 5,319 normal points fall in a detected cell), and a normal red cell is
~7.5 um across, so 7.5 / 42.04 = 0.178 um/px (with this localizer's own boundaries, so
normal Chula cells read 7.5 um). Measured with::

    python benchmarks/localization.py --sets chula      # row "normal_median_d_px"

The scale bar burnt into many Chula fields ("20.00 um" over 104-105 px, i.e. 0.19 um/px)
agrees within ~7 %. The README's "about 10 px per micrometre" cannot be right: it
would make a 45-50 px normal cell 4.5-5 um across, a microcyte.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology, segmentation

from .errors import MorphError
from .labels import PLATELET, UNCLASSIFIED
from .types import Cell

log = logging.getLogger(__name__)

#: Micrometres per pixel of the Chula RBC-12 fields (see module docstring).
DEFAULT_UM_PER_PX = 0.178


@dataclass(frozen=True)
class SegmentConfig:
    """Localization settings. Sizes are relative to the typical red-cell radius ``r``
    estimated per image, so one config serves every magnification.

    Attributes:
        work_radius_px: red-cell radius (px) the field is resampled to before the watershed.
        glass_tolerance: first-pass glass mask: not darker than the glass mode plus this many
            spreads (then 3), so the background map follows vignetting and gradients.
        glass_max_od: ...but never more than this summed optical density above the mode.
        min_contrast_od: summed optical density under which a field holds no stained cells.
        noise_k: the low (hysteresis) foreground threshold sits this many glass-noise standard
            deviations above the glass level.
        seed_noise_k: the high threshold never drops below this many noise deviations.
        min_cell_fraction: while the pixels above the high threshold cover less than this
            fraction of the field, it is re-estimated below itself (see ``_thresholds``).
        low_high_ratio: the low threshold is at least this fraction of the high (Otsu) one.
        max_hole_area: holes up to this area (units of cell area) are filled (central pallor).
        ring_close: gaps in pale rims up to this size (units of ``r``) are closed.
        dt_smooth: Gaussian smoothing of the distance transform, in units of ``r``.
        platelet_rel_viol: small regions whose mean violet density exceeds this fraction of
            the nucleus threshold are platelets (else debris)...
        platelet_share_margin: ...as are small regions whose violet share of the absorbance
            exceeds the red cells' by this margin.
        marker_min_distance: minimum distance between watershed seeds, in units of ``r``.
        split_area: red-cell regions larger than this multiple of the typical region...
        split_max_solidity: ...and less convex than this are split into overlapping cells.
        vote_min: circle centres need at least this fraction of a full circle's outline votes.
        vote_min_distance: minimum distance between circle centres (units of ``r``).
        vote_fill: a disc of this radius (units of ``r``) around each circle centre is added to
            the foreground (pale interiors, broken rims).
        vote_exclusive: distance-transform seeds closer than this (units of ``r``) to a circle
            centre are dropped.
        marker_min_height: minimum distance-transform height of a seed, in units of ``r``.
        debris_area: regions under this area (units of the typical cell area) are debris.
        border_min_area: border-cut regions under this area (units of cell area) are dropped.
        unseeded_min_area: with learned centres, a red-cell region no centre seeded (a split
            piece, an object without a seed) needs at least this area (units of cell area)...
        unseeded_border_min_area: ...or this much when cut by the border.
        platelet_max_area: violet regions under this area (units of cell area) are platelets.
        platelet_min_area: regions from this area up to ``debris_area`` are platelets whatever
            their colour (pale or grey platelets); smaller ones are dust.
        nucleus_rel_od: nuclei are pixels whose violet density exceeds this multiple of
            the typical red-cell value.
        nucleus_min_od: absolute floor (optical density) for the nucleus threshold.
        nucleus_min_area: nuclear groups under this area (units of cell area) are not nuclei.
        cytoplasm_reach: a nucleated cell owns the stained pixels this far (units of ``r``)
            from its nucleus; red-cell seeds are sought only outside.
        cytoplasm_max_reach: regions smaller than ``cytoplasm_max_area`` (cell areas) lying almost
            wholly within this reach (units of ``r``) of a nucleus are its cytoplasm.
        cytoplasm_max_area: see ``cytoplasm_max_reach``.
        fragment_area: a red-cell region under this fraction of the typical one (0 disables)...
        fragment_solidity: ...forming a region at least this convex with a neighbour...
        fragment_contact: ...whose border it shares over this length (units of ``r``) joins it.
        remeasure_floor: the radius re-measured at the working scale replaces the first estimate
            only when it is at least this fraction of it (touching cells fuse at that scale).
        small_seed_dynamic: low distance-transform peaks (small objects touching a cell) become
            seeds when they stand this much (units of ``r``) above the saddle to the cell.
        plausible_rbc_um: median red-cell diameter range (um) considered plausible.
        min_focus: focus measure under which the field is reported out of focus.
        dense_fraction: foreground fraction above which the field is reported too dense.
    """

    work_radius_px: float = 11.0
    glass_tolerance: float = 6.0
    glass_max_od: float = 0.5
    min_contrast_od: float = 0.08
    noise_k: float = 4.0
    seed_noise_k: float = 8.0
    min_cell_fraction: float = 0.2
    low_high_ratio: float = 0.5
    max_hole_area: float = 0.5
    ring_close: float = 0.12
    dt_smooth: float = 0.12
    platelet_rel_viol: float = 0.6
    platelet_share_margin: float = 0.07
    marker_min_distance: float = 0.5
    vote_min: float = 0.3
    split_area: float = 1.4
    split_max_solidity: float = 0.96
    vote_min_distance: float = 0.6
    vote_fill: float = 0.7
    vote_exclusive: float = 1.0
    marker_min_height: float = 0.35
    debris_area: float = 0.12
    border_min_area: float = 0.15
    unseeded_min_area: float = 0.8
    unseeded_border_min_area: float = 0.3
    platelet_max_area: float = 0.25
    platelet_min_area: float = 0.05
    small_seed_dynamic: float = 0.08
    remeasure_floor: float = 0.85
    fragment_area: float = 0.4
    fragment_solidity: float = 0.92
    fragment_contact: float = 0.8
    nucleus_rel_od: float = 2.2
    nucleus_min_od: float = 0.35
    nucleus_min_area: float = 0.12
    cytoplasm_reach: float = 0.9
    cytoplasm_max_reach: float = 1.4
    cytoplasm_max_area: float = 0.8
    plausible_rbc_um: tuple[float, float] = (5.0, 10.0)
    min_focus: float = 0.04
    dense_fraction: float = 0.75


@dataclass
class Segmentation:
    """What :func:`segment_field` found in one field."""

    cells: list[Cell] = field(default_factory=list)
    median_rbc_diameter_px: float | None = None
    warnings: list[str] = field(default_factory=list)
    #: typical red-cell radius (px) the localizer adapted to (diagnostic).
    typical_radius_px: float | None = None
    #: focus measure (normalised Laplacian energy at the working scale; diagnostic).
    focus: float | None = None


# ----------------------------------------------------------------------------- helpers
def _as_rgb_float(image: np.ndarray) -> np.ndarray | None:
    """Any reasonable image array -> (H, W, 3) float32 in 0..255, or None if unusable."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] == 0:
        return None
    if a.shape[0] == 0 or a.shape[1] == 0:
        return np.zeros(a.shape[:2] + (3,), dtype=np.float32)
    if a.dtype == np.bool_:
        a = a.astype(np.float32) * 255.0
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / 257.0
    elif np.issubdtype(a.dtype, np.floating):
        a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if a.size and float(a.max()) <= 1.0:
            a = a * 255.0
    a = a.astype(np.float32, copy=False)
    c = a.shape[2]
    if c == 1:
        a = np.repeat(a, 3, axis=2)
    elif c == 2:  # grey + alpha
        a = np.repeat(a[:, :, :1], 3, axis=2)
    elif c >= 4:
        a = a[:, :, :3]
    if np.asarray(image).dtype in (np.uint8, np.uint16, np.bool_):
        return a  # already within 0..255
    return np.clip(a, 0.0, 255.0)


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Downsample by an integer factor with block averaging (edge-padded)."""
    if k <= 1:
        return a
    h, w = a.shape[:2]
    ph, pw = (-h) % k, (-w) % k
    if ph or pw:
        pad = [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2)
        a = np.pad(a, pad, mode="edge")
    acc = np.zeros((a.shape[0] // k, a.shape[1] // k) + a.shape[2:], dtype=np.float32)
    for i in range(k):
        for j in range(k):
            acc += a[i::k, j::k]
    acc *= 1.0 / (k * k)
    return acc


def _background(rgb: np.ndarray) -> np.ndarray:
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


def _background_map(rgb: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """Per-pixel glass colour (H, W, 3): uneven illumination and stain tint normalised away.

    The global glass colour gives a first glass mask (pixels not darker than the glass mode
    plus its spread); the glass colour is then interpolated over the cells by normalised
    convolution on a coarse grid, twice, so vignetting and gradients are followed. The second
    glass mask is taken against a map that follows a quadratic illumination trend fitted to the
    first one (:func:`_glass_trend`), so darkened corners are recognised as glass instead of
    growing irregular "cells" out of the field edge.
    """
    bg0 = _background(rgb)
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
            raw = _resize_to(log_bg, rgb.shape[:2])[:, :, 0] - log_px
        level, noise = _glass_level(raw)
        below = raw[raw < level] - level
        spread = float(np.sqrt(np.mean(below * below))) if below.size > 16 else noise
        # capped, so that in a crowded field the cells never pass for glass
        glass = (raw < level + min(tol * max(spread, noise), cfg.glass_max_od)).astype(np.float32)
        if glass.mean() < 0.05:
            break
        gl = _block_mean(glass, g)
        col = _block_mean(rgb * glass[:, :, None], g)
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
    return np.maximum(_resize_to(coarse, rgb.shape[:2]), 8.0)


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


def _otsu(values: np.ndarray) -> float:
    try:
        return float(filters.threshold_otsu(values))
    except ValueError:
        return float(values.max()) if values.size else 0.0


def _resize_to(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a small, smooth (h, w, c) map to ``shape`` (pixel centres aligned)."""

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1.0)
        i0 = np.floor(pos).astype(np.intp)
        return i0, np.minimum(i0 + 1, n_in - 1), (pos - i0).astype(np.float32)

    a = a.astype(np.float32)
    x0, x1, fx = axis(shape[1], a.shape[1])
    tmp = a[:, x0] * (1.0 - fx)[None, :, None] + a[:, x1] * fx[None, :, None]
    y0, y1, fy = axis(shape[0], a.shape[0])
    return tmp[y0] * (1.0 - fy)[:, None, None] + tmp[y1] * fy[:, None, None]


def _glass_level(raw: np.ndarray) -> tuple[float, float]:
    """(level, noise) of the glass in a summed-OD map: the histogram mode, and the pixel noise
    (robust spread of neighbour differences, which slow illumination changes do not inflate)."""
    sub = raw[::2, ::2] if min(raw.shape) >= 64 else raw
    lo_, hi_ = np.percentile(sub, [0.5, 60.0])
    # the glass colour was estimated beforehand, so its level is near 0 even where cells
    # outnumber glass pixels
    lo_, hi_ = max(float(lo_), -0.25), min(float(hi_), 0.25)
    d = np.abs(raw[:, 1:] - raw[:, :-1])
    noise = max(1.4826 * float(np.median(d)) / math.sqrt(2.0), 1e-3) if d.size else 0.02
    if hi_ - lo_ < 1e-6:
        return float(hi_), noise
    hist, edges = np.histogram(sub, bins=100, range=(float(lo_), float(hi_)))
    hist = ndi.uniform_filter1d(hist.astype(np.float64), 5)
    i = int(np.argmax(hist))
    return float(0.5 * (edges[i] + edges[i + 1])), noise


def _thresholds(raw: np.ndarray, cfg: SegmentConfig) -> tuple[float, float, float]:
    """(low, high, glass level) hysteresis thresholds of the summed optical density ``raw``.

    High: Otsu, repeated below itself while the class above it is a small minority (dark
    nuclei or a scratch would otherwise lift it above pale red cells), never into the glass
    noise. Low: just above the glass noise, so pale rims join their cell.
    """
    level, noise = _glass_level(raw)
    sig = np.maximum(raw - level, 0.0)
    hi = _otsu(np.minimum(sig, np.percentile(sig, 99.5)))
    floor = cfg.seed_noise_k * noise
    for _ in range(3):
        above = float((sig > hi).mean())
        if above >= cfg.min_cell_fraction:
            break
        # re-split only when more is stained between the noise floor and the threshold
        # (pale red cells) than above it (nuclei, a scratch)
        if float(((sig > floor) & (sig <= hi)).mean()) < above:
            break
        below = sig[sig < hi]
        if below.size < 16:
            break
        nxt = _otsu(below)
        if nxt < floor:
            break
        hi = nxt
    lo = max(cfg.noise_k * noise, cfg.low_high_ratio * hi)
    lo = max(lo, 0.25 * cfg.min_contrast_od)
    hi = max(hi, lo + 1e-3)
    return level + lo, level + hi, level


def _estimate_radius(fg: np.ndarray, nuclear: np.ndarray) -> float | None:
    """Typical red-cell radius (px): weighted median of per-object maximum distance to glass.

    Objects holding nuclear material (white cells, often the largest objects) are left out;
    each object is weighted by its radius so debris and platelets do not pull the estimate down.
    """
    lab, n = ndi.label(fg)
    if n == 0:
        return None
    dt = ndi.distance_transform_edt(fg)
    mx = _label_max(dt, lab, n)[1:]
    size = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
    nuc = np.bincount(lab.ravel(), weights=nuclear.ravel(), minlength=n + 1)[1:]
    ok = mx >= 2.0
    rbc = ok & (nuc <= 0.05 * size)
    big = mx[rbc]
    # objects holding a real nucleus (at least ~a third of a provisional red cell's area)
    r0 = _weighted_median(big) if big.size >= 3 else None
    wbc = ok & ~rbc & (nuc >= (r0 * r0 if r0 else 0.0))
    if wbc.any():
        # red cells touching a white cell: the distance-transform peaks of those objects away
        # from the nuclear material (each touching cell is one peak ~ its radius), measured
        # with round pallor holes filled so ring-like cells count as discs
        filled = _fill_round_holes(fg)
        dtf = ndi.distance_transform_edt(filled)
        # peaks at least half a provisional radius high and that far apart: a big clump's
        # outline bumps are not red cells
        lo = max(2.0, 0.5 * r0) if r0 else 2.0
        peaks = (dtf >= ndi.maximum_filter(dtf, size=max(5, 2 * int(lo) + 1))) & (dtf >= lo)
        peaks &= ~ndi.binary_dilation(nuclear, iterations=3)
        lab_f, n_f = ndi.label(filled)
        keep = np.zeros(n_f + 1, dtype=bool)
        keep[np.unique(lab_f[np.isin(lab, np.nonzero(wbc)[0] + 1)])] = True
        keep[0] = False
        big = np.concatenate([big, dtf[peaks & keep[lab_f]]])
    if big.size < 3:
        big = mx[ok]
    if big.size == 0:
        return None
    return _weighted_median(big)


def _label_max(values: np.ndarray, lab: np.ndarray, n: int) -> np.ndarray:
    """Per-label maximum of non-negative ``values`` for labels 0..n (0 where a label is empty);
    ``ndi.maximum`` gives the same but sorts the whole image."""
    out = np.zeros(n + 1, dtype=np.float64)
    np.maximum.at(out, lab.ravel(), values.ravel())
    return out


def _weighted_median(v: np.ndarray) -> float:
    """Median of ``v`` weighted by the values themselves (large objects count more)."""
    v = np.sort(v)
    cw = np.cumsum(v)
    return float(v[np.searchsorted(cw, 0.5 * cw[-1])])


def _fill_round_holes(fg: np.ndarray) -> np.ndarray:
    """Fill enclosed holes that are round (the pale centre of a ring-like red cell), not the
    concave gaps of glass that a clump of cells encloses, so ring cells measure as discs."""
    lab, n = ndi.label(~fg)
    if n <= 1:
        return fg
    size = np.bincount(lab.ravel(), minlength=n + 1).astype(np.float64)
    mx = _label_max(ndi.distance_transform_edt(~fg), lab, n)
    fill = (mx >= 2.0) & (mx >= 0.7 * np.sqrt(size / math.pi)) & (size < 0.05 * fg.size)
    fill[0] = False
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    fill[edge] = False
    return fg | fill[lab]


def _nucleus_threshold(viol: np.ndarray, fg: np.ndarray, cfg: SegmentConfig) -> float:
    """Violet-density threshold of nuclei: well above the typical red-cell value."""
    level = float(np.median(viol[fg])) if fg.any() else 0.0
    return max(cfg.nucleus_min_od, cfg.nucleus_rel_od * max(level, 0.0))


def _focus_measure(grey: np.ndarray) -> float:
    """Laplacian energy relative to the field's contrast (scale-free at the working scale)."""
    if grey.size < 16:
        return 0.0
    lap = ndi.laplace(grey)
    var = float(grey.var())
    if var < 1e-6:
        return 0.0
    return float(lap.var() / var)


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


def _no_cells(warnings: list[str], reason: str) -> Segmentation:
    warnings.append(reason)
    return Segmentation(cells=[], median_rbc_diameter_px=None, warnings=warnings)


def _density(rgb: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed optical density per channel (H, W, 3) and its smoothed sum (H, W)."""
    od_signed = np.log(bg / np.maximum(rgb, 1.0))
    return od_signed, ndi.gaussian_filter(od_signed.sum(axis=2), 1.0)


def _foreground(
    rgb: np.ndarray, bg: np.ndarray, r: float | None, cfg: SegmentConfig,
    thresholds: tuple[float, float, float] | None = None,
    density: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Optical density (H, W, 3), summed density above glass, cell mask and the thresholds.

    Hysteresis thresholds from :func:`_thresholds` (measured on the coarse pass and reused);
    when the cell radius ``r`` is known, gaps in pale rims are closed and the pallor filled.
    ``density`` is :func:`_density` of the same image and glass map, when already computed.
    """
    od_signed, raw = density if density is not None else _density(rgb, bg)
    lo, hi, level = thresholds if thresholds is not None else _thresholds(raw, cfg)
    sig = np.maximum(raw - level, 0.0)
    fg = filters.apply_hysteresis_threshold(raw, lo, hi)
    fg = ndi.binary_opening(fg)
    if r is None:
        fg = _fill_small_holes(fg, sig.size / 200.0)
    else:
        rad = max(1, int(round(cfg.ring_close * r)))
        fg = fg | ndi.binary_closing(fg, morphology.disk(rad), border_value=0)
        fg = _fill_small_holes(fg, cfg.max_hole_area * math.pi * r * r)
    return np.maximum(od_signed, 0.0), sig, fg, (lo, hi, level)


def _radius_of(fg: np.ndarray, od: np.ndarray, cfg: SegmentConfig) -> float | None:
    viol = od[:, :, 1] - od[:, :, 2]
    # thin violet fringes on red-cell rims (chromatic aberration) are not nuclei: an opening
    # keeps only compact violet material
    nuc = ndi.binary_opening(viol > _nucleus_threshold(viol, fg, cfg), iterations=2)
    opened = ndi.binary_opening(fg)
    return _estimate_radius(opened, nuc)


def _vote_map(fg: np.ndarray, r: float) -> np.ndarray:
    """Radial-symmetry votes: every outline pixel of ``fg`` votes inward at distances ~r."""
    h, w = fg.shape
    g = ndi.gaussian_filter(fg.astype(np.float32), 1.0)
    gy, gx = np.gradient(g)
    edge = fg & ~ndi.binary_erosion(fg)
    ys, xs = np.nonzero(edge)
    votes = np.zeros(h * w, dtype=np.float64)
    if ys.size:
        ny, nx = gy[ys, xs], gx[ys, xs]
        norm = np.hypot(ny, nx)
        ok = norm > 1e-6
        ys, xs, ny, nx = ys[ok], xs[ok], ny[ok] / norm[ok], nx[ok] / norm[ok]
        for f in _VOTE_RADII:
            ty = np.rint(ys + ny * f * r).astype(np.int64)
            tx = np.rint(xs + nx * f * r).astype(np.int64)
            inb = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
            votes += np.bincount(ty[inb] * w + tx[inb], minlength=h * w)
    return ndi.gaussian_filter(votes.reshape(h, w), max(0.7, 0.15 * r))


_VOTE_RADII = (0.7, 0.85, 1.0, 1.15)


@lru_cache(maxsize=64)
def _vote_reference(r10: int) -> float:
    """Peak vote of an isolated disc of radius r (r10 = round(10 r)), for normalisation."""
    r = r10 / 10.0
    n = int(4 * r + 7)
    yy, xx = np.mgrid[:n, :n]
    disc = (yy - n // 2) ** 2 + (xx - n // 2) ** 2 <= r * r
    return float(_vote_map(disc, r).max()) or 1.0


def _circle_votes(fg: np.ndarray, r: float) -> np.ndarray:
    """Vote map normalised so the centre of an isolated disc of radius r scores ~1."""
    return _vote_map(fg, r) / _vote_reference(int(round(10 * r)))


def _stands_alone(dts: np.ndarray, y: int, x: int, h: float, win: int) -> bool:
    """Whether the local maximum of ``dts`` at (y, x) rises at least ``h`` above every path to
    a higher point (its dynamic), judged in a window of half-size ``win``: the region above
    ``dts[y, x] - h`` that holds it contains nothing higher and stays inside the window."""
    y0, x0 = max(0, y - win), max(0, x - win)
    sub = dts[y0:y + win + 1, x0:x + win + 1]
    v = float(dts[y, x])
    lab, _ = ndi.label(sub > v - h)
    comp = lab == lab[y - y0, x - x0]
    if float(sub[comp].max()) > v:
        return False
    hh, ww = sub.shape
    inner_y = (y0 == 0 or not comp[0].any()) and (y0 + hh == dts.shape[0] or not comp[-1].any())
    inner_x = (x0 == 0 or not comp[:, 0].any()) and (x0 + ww == dts.shape[1] or not comp[:, -1].any())
    return inner_y and inner_x


#: spacing (units of r) of the learned nucleated-cell and platelet seeds; red cells use the
#: detector's own ``min_distance``
PEAK_SPACING: dict[str, float] = {"nucleated": 1.0, "platelet": 0.5}


def centre_peaks(heat: np.ndarray, threshold: float, spacing: float) -> np.ndarray:
    """Seeds from a centre map: local maxima at least ``threshold`` high, ~``spacing`` px
    apart, one pixel per plateau (training scores its peaks with the same rule)."""
    md = max(1, int(round(spacing)))
    return _one_per_plateau((heat >= ndi.maximum_filter(heat, size=2 * md + 1)) & (heat >= threshold))


def _split_nuclear_groups(groups: np.ndarray, n: int, peaks: np.ndarray) -> tuple[np.ndarray, int]:
    """Split each nuclear group holding two or more nucleated-cell centres between them
    (each pixel to its nearest centre); groups with fewer stay whole. Returns new labels."""
    pid = np.where(peaks & (groups > 0), groups, 0)
    per = np.bincount(pid.ravel(), minlength=n + 1)
    per[0] = 0
    multi = per >= 2
    if not multi.any():
        return groups, n
    py, px = np.nonzero(peaks & multi[groups])
    seeds = np.zeros(groups.shape, dtype=np.int32)
    seeds[py, px] = np.arange(1, py.size + 1)
    _, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    nearest = seeds[iy, ix]
    # new ids: untouched groups keep a compact numbering, split groups get one id per centre
    keep = np.nonzero(~multi[1:])[0] + 1
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[keep] = np.arange(1, keep.size + 1)
    out = lut[groups]
    sel = multi[groups]
    out[sel] = keep.size + nearest[sel]
    return out.astype(np.int32), int(keep.size + py.size)


def _one_per_plateau(mask: np.ndarray) -> np.ndarray:
    """Keep one pixel (the first) of each 8-connected group of ``mask``."""
    lab, n = ndi.label(mask, structure=np.ones((3, 3)))
    out = np.zeros_like(mask)
    if n:
        flat = lab.ravel()
        idx = np.nonzero(flat)[0]
        _, first = np.unique(flat[idx], return_index=True)
        out.ravel()[idx[first]] = True
    return out


def _hull_area(ys: np.ndarray, xs: np.ndarray) -> float:
    """Pixel count of the convex hull of a region (Pick's estimate from the hull of the pixel
    centres), for solidity; much cheaper than rasterising the hull."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        hull = ConvexHull(np.stack([ys, xs], axis=1).astype(np.float64))
    except (QhullError, ValueError):
        return max(float(len(ys)), 1.0)
    return max(float(hull.volume + hull.area / 2.0 + 1.0), float(len(ys)))


def _kmeans(pts: np.ndarray, n: int, iters: int = 8) -> np.ndarray:
    """Tiny Lloyd k-means on (N, 2) points, seeded along the principal axis; returns labels."""
    mu = pts.mean(axis=0)
    cov = np.cov((pts - mu).T) if len(pts) > 2 else np.eye(2)
    evals, evecs = np.linalg.eigh(cov)
    axis = evecs[:, -1] * math.sqrt(max(evals[-1], 1e-6))
    cent = mu + np.outer(np.linspace(-1.0, 1.0, n), axis)
    lab = np.zeros(len(pts), dtype=np.int64)
    for _ in range(iters):
        d = ((pts[:, None, :] - cent[None, :, :]) ** 2).sum(axis=2)
        lab = d.argmin(axis=1)
        for j in range(n):
            sel = lab == j
            if sel.any():
                cent[j] = pts[sel].mean(axis=0)
    return lab


def _merge_fragments(ws: np.ndarray, nm: int, n_nuc: int, r: float, cfg: SegmentConfig) -> np.ndarray:
    """Join a small red-cell region to the neighbour it was cut from: a fragment (under
    ``fragment_area`` of the typical region) sharing a long border with a region, the two
    together convex. Two seeds in one oval or large cell otherwise leave a square notch that
    reads as a schistocyte. Touching or overlapping cells meet at a neck and stay apart."""
    if cfg.fragment_area <= 0:
        return ws
    areas, typical = _region_areas(ws, nm, n_nuc, math.pi * r * r)
    if typical is None:
        return ws
    # shared border lengths of every pair of touching red-cell regions
    a = np.concatenate([ws[:, :-1].ravel(), ws[:-1, :].ravel()])
    b = np.concatenate([ws[:, 1:].ravel(), ws[1:, :].ravel()])
    sel = (a != b) & (a > n_nuc) & (b > n_nuc)
    if not sel.any():
        return ws
    lo, hi = np.minimum(a[sel], b[sel]), np.maximum(a[sel], b[sel])
    pair_ids, contact = np.unique(lo.astype(np.int64) * (nm + 1) + hi, return_counts=True)
    small = np.minimum(areas[pair_ids // (nm + 1)], areas[pair_ids % (nm + 1)])
    keep = (contact >= cfg.fragment_contact * r) & (small <= cfg.fragment_area * typical)
    if not keep.any():
        return ws
    lut = np.arange(nm + 1, dtype=np.int32)
    objs = ndi.find_objects(ws, max_label=nm)
    for pid in pair_ids[keep][np.argsort(-contact[keep])]:
        i, j = int(lut[pid // (nm + 1)]), int(lut[pid % (nm + 1)])
        if i == j or min(areas[i], areas[j]) > cfg.fragment_area * typical:
            continue
        si, sj = objs[i - 1], objs[j - 1]
        if si is None or sj is None:
            continue
        frag = si if areas[i] <= areas[j] else sj
        if frag[0].start == 0 or frag[1].start == 0 or frag[0].stop == ws.shape[0] or frag[1].stop == ws.shape[1]:
            continue  # a small region at the image edge is a cut cell, not a fragment
        box = _union_box(si, sj)
        if _union_solidity(lut[ws[box]], i, j) < cfg.fragment_solidity:
            continue
        lut[lut == j] = i
        areas[i] += areas[j]
        areas[j] = 0.0
        objs[i - 1] = box
    return lut[ws]


def _union_box(si: tuple[slice, ...], sj: tuple[slice, ...]) -> tuple[slice, ...]:
    """The bounding box of two regions' boxes."""
    return tuple(slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(si, sj, strict=True))


def _union_solidity(sub: np.ndarray, i: int, j: int) -> float:
    """Solidity (area / convex-hull area) of labels ``i`` and ``j`` of ``sub`` taken together."""
    ys, xs = np.nonzero((sub == i) | (sub == j))
    return ys.size / _hull_area(ys, xs)


def _absorb_pieces(ws: np.ndarray, nm: int, pieces: np.ndarray, targets: np.ndarray, min_contact: float,
                   min_solidity: float) -> tuple[np.ndarray, bool]:
    """Join each region in ``pieces`` to the ``targets`` region it shares the longest border
    with (at least ``min_contact`` px) when the two make one convex body (solidity at least
    ``min_solidity``: one cell cut in two, not a second, overlapping cell); other pieces are
    left as they are."""
    objs = ndi.find_objects(ws, max_label=nm)
    lut = np.arange(nm + 1, dtype=np.int32)
    H, W = ws.shape
    for i in pieces.tolist():
        si = objs[i - 1]
        if si is None:
            continue
        # the piece's box grown by one pixel: every pixel pair across its border lies inside
        box = (slice(max(0, si[0].start - 1), min(H, si[0].stop + 1)),
               slice(max(0, si[1].start - 1), min(W, si[1].stop + 1)))
        sub = ws[box]
        a = np.concatenate([sub[:, :-1].ravel(), sub[:-1, :].ravel(), sub[:, 1:].ravel(), sub[1:, :].ravel()])
        b = np.concatenate([sub[:, 1:].ravel(), sub[1:, :].ravel(), sub[:, :-1].ravel(), sub[:-1, :].ravel()])
        nb = b[(a == i) & targets[b]]
        if nb.size == 0:
            continue
        cand, contact = np.unique(nb, return_counts=True)
        order = np.argsort(-contact)  # longest shared border first
        for j in cand[order][contact[order] >= min_contact].tolist():
            sj = objs[j - 1]
            if sj is None:
                continue
            if _union_solidity(ws[_union_box(si, sj)], i, j) >= min_solidity:
                lut[i] = j
                break
    changed = bool((lut != np.arange(nm + 1)).any())
    return (lut[ws] if changed else ws), changed


def _region_areas(ws: np.ndarray, nm: int, n_nuc: int, cell_area: float) -> tuple[np.ndarray, float | None]:
    """Pixel count of every label of ``ws``, and the typical red-cell region: the median of
    those over 0.4 cell areas (None when fewer than three)."""
    areas = np.bincount(ws.ravel(), minlength=nm + 1).astype(np.float64)
    cand = areas[n_nuc + 1:]
    cand = cand[cand > 0.4 * cell_area]
    return areas, (float(np.median(cand)) if cand.size >= 3 else None)


def _split_large(
    ws: np.ndarray, nm: int, n_nuc: int, cell_area: float, cfg: SegmentConfig
) -> tuple[np.ndarray, int]:
    """Split red-cell regions holding several overlapping cells (large and non-convex)."""
    areas, typical = _region_areas(ws, nm, n_nuc, cell_area)
    if typical is None:
        return ws, nm
    objs = ndi.find_objects(ws, max_label=nm)
    for lab_id in range(n_nuc + 1, nm + 1):
        a = areas[lab_id]
        sl = objs[lab_id - 1]
        if sl is None or a < cfg.split_area * typical:
            continue
        m = ws[sl] == lab_id
        ys, xs = np.nonzero(m)
        if a / _hull_area(ys, xs) > cfg.split_max_solidity:
            continue
        n = int(min(max(round(a / typical), 2), 8))
        parts = _kmeans(np.stack([ys, xs], axis=1).astype(np.float64), n)
        sub = ws[sl]
        for j in range(1, n):
            nm += 1
            sub[ys[parts == j], xs[parts == j]] = nm
    return ws, nm


@dataclass
class _Working:
    work: np.ndarray
    od: np.ndarray
    raw: np.ndarray
    fg: np.ndarray
    thr: tuple[float, float, float]
    k: int
    r_full: float


def _working(rgb: np.ndarray, cfg: SegmentConfig) -> _Working | str:
    """Steps 1-2: glass map, density, foreground and the typical radius, at the working scale
    (block size ``k``); a string says why the field holds no cells."""
    H, W = rgb.shape[:2]
    # 1. coarse pass (~320 px): glass colour map, then the typical red-cell radius of this field
    c = max(1, int(max(H, W) // 320))
    small = _block_mean(rgb, c)
    bg_s = _background_map(small, cfg)
    dens_s = _density(small, bg_s)
    od_s, raw_s, fg_s, thr = _foreground(small, bg_s, None, cfg, density=dens_s)
    if float(np.percentile(raw_s, 99.5)) < cfg.min_contrast_od:
        return "no cells found: the field has no stained objects (blank slide?)"
    r_s = _radius_of(fg_s, od_s, cfg)
    if r_s is None:
        return "no cells found: no object large enough to be a cell"
    r_full = r_s * c

    # 2. working scale: resample so the typical red cell has radius ~work_radius_px; re-measure
    #    the radius there once (pale, ring-like cells are only filled at the right scale)
    for attempt in range(2):
        k = max(1, int(round(r_full / cfg.work_radius_px)))
        if k == c:
            work, bg, dens = small, bg_s, dens_s
        else:
            work = _block_mean(rgb, k)
            bg, dens = _resize_to(bg_s, work.shape[:2]), None
        od, raw, fg, _ = _foreground(work, bg, r_full / k, cfg, thr, dens)
        r_new = _radius_of(fg, od, cfg)
        if attempt or r_new is None:
            break
        r_new *= k
        if r_new < cfg.remeasure_floor * r_full:
            # far smaller at the working scale: touching cells fused there (a crowded,
            # high-magnification field); the first estimate stands
            break
        if max(1, int(round(r_new / cfg.work_radius_px))) == k:
            r_full = r_new
            break
        r_full = r_new
    return _Working(work=work, od=od, raw=raw, fg=fg, thr=thr, k=k, r_full=float(r_full))


@dataclass
class WorkingView:
    """A field as the localizer sees it (what a centre-map network reads and is trained on).

    Attributes:
        od: (h, w, 3) float32 optical density of each channel above the glass, at the
            working scale.
        k: block size: one working pixel averages k x k original pixels.
        radius: typical red-cell radius in working pixels (~``work_radius_px``).
    """

    od: np.ndarray
    k: int
    radius: float


def working_view(image: np.ndarray, config: SegmentConfig = SegmentConfig()) -> WorkingView | None:
    """The working-scale optical density of ``image`` (``None`` for a field without cells)."""
    rgb = _as_rgb_float(image)
    if rgb is None or min(rgb.shape[:2]) < 8:
        return None
    wv = _working(rgb, config)
    if isinstance(wv, str):
        return None
    return WorkingView(od=wv.od.astype(np.float32), k=wv.k, radius=wv.r_full / wv.k)


#: A centre-map model: working-scale optical density (h, w, 3) -> centre probability per
#: working pixel, one (h, w) map per cell kind ("rbc" required; "nucleated", "platelet"
#: optional) or a bare (h, w) red-cell map. Optional attributes ``thresholds`` (per kind)
#: and ``min_distance`` (red-cell seed spacing, units of r) set the peak rules.
CentreMap = Callable[[np.ndarray], "Mapping[str, np.ndarray] | np.ndarray"]


# ----------------------------------------------------------------------------- main entry
def segment_field(
    image: np.ndarray, um_per_px: float = DEFAULT_UM_PER_PX, config: SegmentConfig = SegmentConfig(),
    centres: CentreMap | None = None,
) -> Segmentation:
    """Locate red cells, nucleated cells and platelets in one RGB field.

    Args:
        image: (H, W, 3) RGB array (uint8 preferred; grey, RGBA, 16-bit and float are accepted).
        um_per_px: physical scale used for ``diameter_um`` and the size-plausibility warning;
            localization itself adapts to the cell size it measures in the image.
        config: thresholds (see :class:`SegmentConfig`).
        centres: a learned centre map (:class:`morph.localize.CentreDetector`); its peaks
            become the red-cell seeds instead of circle votes and distance maxima.

    Returns:
        A :class:`Segmentation`: cells (ids in reading order), the median red-cell diameter
        (px, cells cut by the border excluded) and warnings a person should read.

    Raises:
        MorphError: ``bad_request`` for a non-positive scale, ``unsupported_image`` for an
            array that is not an image.
    """
    cfg = config
    if not (isinstance(um_per_px, int | float) and math.isfinite(um_per_px) and um_per_px > 0):
        raise MorphError("bad_request", f"um_per_px must be a positive number, got {um_per_px!r}")
    warnings: list[str] = []
    rgb = _as_rgb_float(image)
    if rgb is None:
        shape = getattr(image, "shape", None)
        raise MorphError("unsupported_image", f"expected an (H, W, 3) image array, got shape {shape}")
    H, W = rgb.shape[:2]
    if min(H, W) < 8:
        return _no_cells(warnings, f"no cells found: image too small to hold a cell ({W}x{H} px)")

    wv = _working(rgb, cfg)
    if isinstance(wv, str):
        return _no_cells(warnings, wv)
    work, od, raw, fg, thr, k, r_full = wv.work, wv.od, wv.raw, wv.fg, wv.thr, wv.k, wv.r_full
    h, w = work.shape[:2]
    r = r_full / k
    cell_area = math.pi * r * r
    focus = _focus_measure(work.mean(axis=2))

    # 3. nuclei: strongly violet (green absorbed, blue transmitted) well above the red-cell level
    viol = od[:, :, 1] - od[:, :, 2]
    tn = _nucleus_threshold(viol, fg, cfg)
    nuc = ndi.binary_opening(viol > tn)
    rad = max(1, int(round(0.35 * r)))
    group = nuc.copy()
    if nuc.any():
        # the closing on the nuclei's bounding box only (nuclei are sparse): outside it, more
        # than the disk's radius from any nucleus, the dilation is empty, so the result is exact
        ys, xs = np.nonzero(nuc)
        m = rad + 1
        box = (slice(max(0, ys.min() - m), ys.max() + m + 1), slice(max(0, xs.min() - m), xs.max() + m + 1))
        group[box] |= ndi.binary_closing(nuc[box], morphology.disk(rad), border_value=0)
    glab, ng = ndi.label(group)
    nuc_groups = np.zeros((h, w), dtype=np.int32)
    n_nuc = 0
    if ng:
        nuc_area = np.bincount(glab.ravel(), weights=nuc.ravel(), minlength=ng + 1)
        keep = nuc_area >= cfg.nucleus_min_area * cell_area
        keep[0] = False
        if keep.any():
            ids = np.cumsum(keep) * keep
            nuc_groups = ids[glab].astype(np.int32)
            n_nuc = int(keep.sum())

    # learned centre maps (morph.localize): red-cell seeds; nuclear groups holding two or more
    # nucleated-cell centres are split between them; platelet centres seed small objects
    heats: dict[str, np.ndarray] = {}
    cthr: dict[str, float] = {}
    if centres is not None:
        got = centres(od.astype(np.float32))
        heats = {"rbc": got} if isinstance(got, np.ndarray) else dict(got)
        cthr = dict(getattr(centres, "thresholds", {}) or {})
        if n_nuc and "nucleated" in heats:
            nuc_groups, n_nuc = _split_nuclear_groups(
                nuc_groups, n_nuc, centre_peaks(heats["nucleated"], cthr.get("nucleated", 0.5), PEAK_SPACING["nucleated"] * r))

    # 4. seeds. Circle centres voted by the foreground outline (radial symmetry: each outline
    #    pixel votes inward at distances around r) find overlapping and pale ring-like cells;
    #    their discs fill pale interiors. Distance-transform maxima add the cells no circle
    #    explains (elongated, irregular). Each nuclear group is one seed.
    nuc_any = nuc_groups > 0
    # each nucleated cell owns the stained pixels within a cytoplasm reach of its nucleus;
    # red-cell seeds are found on the rest, so red cells touching a white cell keep their own
    # seeds instead of being flooded by the (much larger) white cell
    fg_rbc = fg
    wbc_lab = nuc_groups
    if n_nuc:
        nd, (iy, ix) = ndi.distance_transform_edt(~nuc_any, return_indices=True)
        zone = (nd <= cfg.cytoplasm_reach * r) & (fg | nuc_any)
        wbc_lab = np.where(zone, nuc_groups[iy, ix], 0).astype(np.int32)
        fg_rbc = fg & ~zone
    if centres is None:
        votes = _circle_votes(fg_rbc, r)
        vmd = max(1, int(round(cfg.vote_min_distance * r)))
        vpk = (votes >= ndi.maximum_filter(votes, size=2 * vmd + 1)) & (votes >= cfg.vote_min) & fg_rbc
    else:
        # learned centre map: one peak per red cell (see morph.localize)
        spacing = float(getattr(centres, "min_distance", cfg.vote_min_distance)) * r
        vpk = centre_peaks(heats["rbc"], cthr.get("rbc", 0.5), spacing)
    if n_nuc:
        near_nuc = nd <= max(1, int(round(0.5 * r)))  # = dilation by that disk
        vpk &= ~near_nuc
    vy, vx = np.nonzero(vpk)
    fg_all = fg | nuc_any
    if vy.size:
        spots = np.ones((h, w), dtype=bool)
        spots[vy, vx] = False
        spot_dist = ndi.distance_transform_edt(spots)
        fg_all |= spot_dist <= cfg.vote_fill * r
    dt = ndi.distance_transform_edt(fg_all & (wbc_lab == 0))
    dts = ndi.gaussian_filter(dt, sigma=max(0.5, cfg.dt_smooth * r))
    md = max(1, int(round(cfg.marker_min_distance * r)))
    if centres is None:
        peak = (dts >= ndi.maximum_filter(dts, size=2 * md + 1)) & (dts > cfg.marker_min_height * r)
    else:
        peak = np.zeros((h, w), dtype=bool)  # the learned centres are the red-cell seeds
    if n_nuc:
        peak &= ~near_nuc
    if vy.size:
        peak &= spot_dist > cfg.vote_exclusive * r
    ppk: np.ndarray | None = None
    if "platelet" in heats:
        # platelet centres pressed against a red cell get a seed of their own (not within
        # ~half a red cell of a red-cell seed, nor inside a nucleated cell's zone)
        ppk = centre_peaks(heats["platelet"], cthr.get("platelet", 0.5), PEAK_SPACING["platelet"] * r)
        ppk &= fg_all & (wbc_lab == 0)
        if n_nuc:
            ppk &= ~near_nuc
        if vy.size:
            ppk &= spot_dist > 0.6 * r
    if cfg.small_seed_dynamic > 0:
        # small objects pressed against a cell (platelets, fragments): a distance peak too low
        # for a red-cell seed but separated from the cell by a neck (its dynamic, the drop to
        # the saddle, is large); a teardrop's tail or a burr cell's spicule rises into the
        # cell without a saddle and gets no seed
        hdyn = cfg.small_seed_dynamic * r
        low = (dts >= ndi.maximum_filter(dts, size=3)) & (dts <= cfg.marker_min_height * r)
        low &= (dts >= 0.5 * hdyn) & ~peak
        if n_nuc:
            low &= ~near_nuc
        if vy.size:
            low &= spot_dist > cfg.vote_exclusive * r
        ly, lx = np.nonzero(low)
        if ppk is not None and ppk.any() and ly.size:
            # a learned platelet centre already seeds that object: one seed per platelet
            qy, qx = np.nonzero(ppk)
            far = np.hypot(ly[:, None] - qy[None], lx[:, None] - qx[None]).min(axis=1) > 0.5 * r
            ly, lx = ly[far], lx[far]
        for y, x in zip(ly.tolist(), lx.tolist(), strict=True):
            if _stands_alone(dts, y, x, hdyn, int(2 * r) + 2):
                peak[y, x] = True
    peak |= vpk
    plab, npk = ndi.label(peak, structure=np.ones((3, 3)))
    markers = np.where(plab > 0, plab + n_nuc, wbc_lab).astype(np.int32)
    nm = n_nuc + npk
    rbc_seed_ids = np.unique(plab[vpk]) + n_nuc
    plt_seeded = np.zeros(0, dtype=np.int64)
    if ppk is not None:
        ppk &= markers == 0
        py, px = np.nonzero(ppk)
        plt_seeded = np.arange(nm + 1, nm + 1 + py.size)
        markers[py, px] = plt_seeded
        nm += py.size
    # objects without a seed (small ones: platelets, fragments) get one at their deepest point
    lab_fg, nfg = ndi.label(fg_all)
    has = np.zeros(nfg + 1, dtype=bool)
    has[lab_fg[markers > 0]] = True
    missing = np.nonzero(~has[1:])[0] + 1
    if missing.size:
        for yx in ndi.maximum_position(dts, lab_fg, index=missing):
            nm += 1
            markers[int(yx[0]), int(yx[1])] = nm
    if centres is None:
        surface = -dts
    else:
        # learned seeds sit where the cells are, not on distance maxima (two touching cells
        # often make one distance hill): flood by distance from the seeds, deeper pixels first
        surface = ndi.distance_transform_edt(markers == 0) - dts
    ws = segmentation.watershed(surface, markers, mask=fg_all)

    # 5. overlapping cells the seeds missed: a red-cell region much larger than the typical
    #    one and clearly non-convex is split into round(area / typical) parts (k-means)
    ws = _merge_fragments(ws, nm, n_nuc, r, cfg)
    ws, nm = _split_large(ws, nm, n_nuc, cell_area, cfg)
    if n_nuc:
        # left-over white-cell cytoplasm: small regions lying almost wholly close to a nucleus
        # join that nucleated cell instead of being reported as red cells
        near = (nd <= cfg.cytoplasm_max_reach * r).ravel()
        flat = ws.ravel()
        cnt = np.bincount(flat, minlength=nm + 1).astype(np.float64)
        frac = np.bincount(flat, weights=near, minlength=nm + 1) / np.maximum(cnt, 1.0)
        owner = np.asarray(
            _label_max(nuc_groups[iy, ix], ws, nm), dtype=np.int32)
        lut = np.arange(nm + 1, dtype=np.int32)
        sel = (frac >= 0.85) & (cnt < cfg.cytoplasm_max_area * cell_area) & (owner > 0)
        sel[: n_nuc + 1] = False
        lut[sel] = owner[sel]
        ws = lut[ws]

    # 6. regions -> cells
    stats = _region_stats(ws, nm)
    sum_viol = np.bincount(ws.ravel(), weights=viol.ravel(), minlength=nm + 1)
    sum_od = np.bincount(ws.ravel(), weights=od.sum(axis=2).ravel(), minlength=nm + 1)
    mean_viol = sum_viol / np.maximum(stats["n"], 1)
    # violet share of the absorbance: platelets (and nuclei) are bluer than the red cells
    share = sum_viol / np.maximum(sum_od, 1e-6)
    big = stats["n"] >= 0.4 * cell_area
    big[: n_nuc + 1] = False
    rbc_share = float(np.median(share[big])) if big.any() else 0.25
    # regions grown from a learned red-cell centre (the others must be large to count)
    is_rbc_seed = np.zeros(nm + 1, dtype=bool)
    if centres is not None:
        is_rbc_seed[rbc_seed_ids] = True
    is_plt_seed = np.zeros(nm + 1, dtype=bool)
    is_plt_seed[plt_seeded] = True
    kinds: dict[int, str] = {}
    absorb: list[int] = []
    objs = ndi.find_objects(ws, max_label=nm)
    for lab_id, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        area_w = float(stats["n"][lab_id])
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        border = y0 == 0 or x0 == 0 or y1 == h or x1 == w
        rel = area_w / cell_area
        if lab_id <= n_nuc:
            kind = "nucleated"
        elif is_plt_seed[lab_id] and cfg.platelet_min_area <= rel < cfg.platelet_max_area:
            kind = "platelet"
        elif rel < cfg.platelet_max_area and (
            mean_viol[lab_id] > cfg.platelet_rel_viol * tn
            or share[lab_id] > rbc_share + cfg.platelet_share_margin
        ):
            kind = "platelet"
        elif not border and cfg.platelet_min_area <= rel < cfg.debris_area:
            # platelet-sized (~2-3 um) even when its stain is not violet (pale or grey
            # platelets); smaller specks are dust or stain precipitate
            kind = "platelet"
        elif rel < (cfg.border_min_area if border else cfg.debris_area):
            continue
        elif centres is not None and not is_rbc_seed[lab_id] and rel < (
            cfg.unseeded_border_min_area if border else cfg.unseeded_min_area
        ):
            # the centre map saw no red cell here: a piece cut from a seeded cell (a k-means
            # split of one large cell) goes back to it, anything else is dropped
            absorb.append(lab_id)
            continue
        else:
            kind = "rbc"
        kinds[lab_id] = kind
    if absorb:
        targets = np.zeros(nm + 1, dtype=bool)
        targets[[i for i, kd in kinds.items() if kd == "rbc" and is_rbc_seed[i]]] = True
        ws, changed = _absorb_pieces(ws, nm, np.asarray(absorb), targets, cfg.fragment_contact * r,
                                     cfg.fragment_solidity)
        if changed:
            stats = _region_stats(ws, nm)
            objs = ndi.find_objects(ws, max_label=nm)
    cells: list[Cell] = []
    for lab_id, kind in sorted(kinds.items()):
        sl = objs[lab_id - 1]
        if sl is None:
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        border = y0 == 0 or x0 == 0 or y1 == h or x1 == w
        m = ws[sl] == lab_id
        cells.append(_make_cell(m, y0, x0, k, H, W, border, kind, um_per_px,
                                stats["cy"][lab_id], stats["cx"][lab_id], stats["ecc"][lab_id]))

    cells.sort(key=lambda cl: (round(cl.y / max(r_full, 1.0)), cl.x))
    for i, cl in enumerate(cells):
        cl.id = i
    diam = [cl.diameter_px for cl in cells if cl.kind == "rbc" and not cl.touches_border]
    med = float(np.median(diam)) if diam else None

    # 7. warnings a person should read
    if not cells:
        warnings.append("no cells found (blank slide or unstained field?)")
    if med is not None:
        lo, hi = cfg.plausible_rbc_um
        med_um = med * um_per_px
        if not lo <= med_um <= hi:
            warnings.append(
                f"median red-cell diameter {med_um:.1f} um is implausible for the stated scale "
                f"({um_per_px:g} um/px; expected {lo:g}-{hi:g} um): check um_per_px; a global size "
                "shift may itself be macro/microcytosis (sizes were not rescaled)"
            )
    if cells and focus < cfg.min_focus:
        warnings.append(f"field looks out of focus (focus measure {focus:.3f}); shapes and counts are less reliable")
    # stained fraction: the foreground, or every pixel darker than the glass (pale centres of
    # piled-up cells included), whichever is larger
    fg_frac = max(float(fg_all.mean()), float((raw > thr[0] - thr[2]).mean()))
    if fg_frac > cfg.dense_fraction:
        warnings.append(
            f"very dense field: cells cover {100 * fg_frac:.0f}% of it and overlap heavily; "
            "splitting and counts are less reliable"
        )
    log.debug("segment: %d cells, r=%.1f px, k=%d, thresholds=%s, focus=%.3f",
              len(cells), r_full, k, thr, focus)
    return Segmentation(
        cells=cells, median_rbc_diameter_px=med, warnings=warnings,
        typical_radius_px=float(r_full), focus=focus,
    )


def _make_cell(
    m: np.ndarray, y0: int, x0: int, k: int, H: int, W: int, border: bool, kind: str,
    um_per_px: float, cy: float, cx: float, ecc: float,
) -> Cell:
    """Build a full-resolution :class:`Cell` from a working-scale mask and its moments."""
    full = m.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else m
    fy0, fx0 = y0 * k, x0 * k
    fy1, fx1 = min(fy0 + full.shape[0], H), min(fx0 + full.shape[1], W)
    full = full[: fy1 - fy0, : fx1 - fx0]
    area = float(full.sum())
    d = math.sqrt(4.0 * area / math.pi)
    return Cell(
        id=0,
        x=float((cx + 0.5) * k - 0.5),
        y=float((cy + 0.5) * k - 0.5),
        bbox=(int(fx0), int(fy0), int(fx1), int(fy1)),
        kind=kind,
        label=PLATELET if kind == "platelet" else UNCLASSIFIED,
        area_px=area,
        diameter_px=float(d),
        diameter_um=float(d * um_per_px),
        eccentricity=float(ecc) if math.isfinite(ecc) else 0.0,
        touches_border=bool(border),
        mask=np.ascontiguousarray(full),
    )


def _region_stats(lab: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Area, centroid and eccentricity of every label at once (vectorised moments)."""
    yy, xx = np.indices(lab.shape, dtype=np.float64)
    flat = lab.ravel()
    cnt = np.bincount(flat, minlength=n + 1).astype(np.float64)
    safe = np.maximum(cnt, 1.0)
    sx = np.bincount(flat, weights=xx.ravel(), minlength=n + 1)
    sy = np.bincount(flat, weights=yy.ravel(), minlength=n + 1)
    cx, cy = sx / safe, sy / safe
    dx, dy = xx.ravel() - cx[flat], yy.ravel() - cy[flat]
    mxx = np.bincount(flat, weights=dx * dx, minlength=n + 1) / safe
    myy = np.bincount(flat, weights=dy * dy, minlength=n + 1) / safe
    mxy = np.bincount(flat, weights=dx * dy, minlength=n + 1) / safe
    # eigenvalues of the covariance matrix give the axes of the fitted ellipse
    tr, det = mxx + myy, mxx * myy - mxy * mxy
    disc = np.sqrt(np.maximum(tr * tr / 4.0 - det, 0.0))
    l1, l2 = tr / 2.0 + disc, np.maximum(tr / 2.0 - disc, 0.0)
    ecc = np.where(l1 > 0, np.sqrt(np.clip(1.0 - l2 / np.maximum(l1, 1e-12), 0.0, 1.0)), 0.0)
    return {"n": cnt, "cx": cx, "cy": cy, "ecc": ecc}
