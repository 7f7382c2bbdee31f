"""Step 3, adapting to magnification: the typical red-cell radius of a field and the working
scale (block size) at which it is ~``work_radius_px``; every size rule is in units of it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .arrays import area_mean, as_rgb_float, block_mean, label_max, resize_to
from .blank import field_part
from .config import SegmentConfig
from .foreground import foreground, hysteresis_thresholds, local_thresholds, spans_several_areas
from .glass import background_map, follow_glass_steps, optical_density
from .nuclei import chromatin_density, nucleus_threshold


@dataclass
class RadiusEstimate:
    """The typical radius of one mask (px) and what checks it (:func:`_unclumped`): the weighted
    median radius of its single cells (None under three of them) and whether the typical radius
    is a clump's thickness."""

    radius: float
    single_radius: float | None = None
    clumped: bool = False


def _estimate_radius(fg: np.ndarray, nuclear: np.ndarray, max_area: float | None = None,
                     cfg: SegmentConfig = SegmentConfig(), speck_below: float | None = None,
                     single_cells: float | None = None) -> RadiusEstimate | None:
    """Typical red-cell radius (px): weighted median of per-object maximum distance to glass.

    Objects holding nuclear material (white cells, often the largest objects) are left out;
    each object is weighted by its radius so debris and platelets do not pull the estimate down.
    Objects over ``max_area`` px (when given) are clumps of many cells, whose thickness is no
    cell's radius: they are left out too. The single cells' radius comes with it, to check it
    against clumps (:class:`RadiusEstimate`; ``speck_below`` and ``single_cells``, when given,
    replace ``speck_radius r`` and ``single_cell_area``).
    """
    lab, n = ndi.label(fg)
    if n == 0:
        return None
    # round pallor holes filled, so ring-like cells measure as discs: a hypochromic cell, or any
    # cell whose pale centre an over-exposed camera lifts to the glass, is no thinner than a disc.
    # Only in round objects (a cell, or two touching): a blurred clump of many overlapping cells
    # can enclose a round gap of glass, and filling it would measure the clump's thickness.
    holes = _round_holes(fg)
    filled = fg | holes
    dt_filled = ndi.distance_transform_edt(filled)
    pallor = holes & _round_objects(filled, dt_filled)
    dt = dt_filled if np.array_equal(pallor, holes) else ndi.distance_transform_edt(fg | pallor)
    mx = label_max(dt, lab, n)[1:]
    size = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
    nuc = np.bincount(lab.ravel(), weights=nuclear.ravel(), minlength=n + 1)[1:]
    ok = mx >= 2.0
    if max_area is not None:
        ok &= size <= max_area
    rbc = ok & (nuc <= 0.05 * size)
    big = mx[rbc]
    # objects holding a real nucleus (at least ~a third of a provisional red cell's area)
    r0 = _weighted_median(big) if big.size >= 3 else None
    wbc = ok & ~rbc & (nuc >= (r0 * r0 if r0 else 0.0))
    if wbc.any():
        # red cells touching a white cell: the distance-transform peaks of those objects away
        # from the nuclear material (each touching cell is one peak ~ its radius), with every
        # round pallor hole filled (a red cell pressed against a white cell is no round object)
        dtf = dt_filled
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
    r = _weighted_median(big)
    single = _single_cells_radius(dt, lab, n, size, rbc, speck_below or cfg.speck_radius * r,
                                  single_cells or cfg.single_cell_area)
    clumped = bool(np.any(ok & (size > cfg.clump_area_cells * math.pi * mx * mx) & (mx == r)))
    # a fold or stain deposit can darken a red cell's body (bcd-256: 13% of one); a white cell's
    # nucleus covers a third of it or more
    few = _few_cells_radius(lab, size, mx, ok & (nuc < cfg.few_cells_nucleus * size), cfg)
    return RadiusEstimate(r if few is None else max(r, few), single, clumped=clumped)


def _few_cells_radius(lab: np.ndarray, size: np.ndarray, mx: np.ndarray, cells: np.ndarray,
                      cfg: SegmentConfig) -> float | None:
    """On a field of under ``few_cells`` objects, the area-equivalent radius (px) of those
    that are whole (clear of the field's edge, at most ``few_cells_area`` discs of their own
    thickness); None on a fuller field or with none whole.

    A typical radius from the thickest points needs many cells: over two or three, one
    elongated or oval cell (its short half-axis) or cells the edge cuts decide it. On bcd-256
    fields left with 2-3 cells (the robustness benchmark's sparse fields) it read 11-16 px for
    cells of ~24, and the field was read at full resolution, where the centre map splits cells
    twice its trained size in two."""
    if cells.sum() >= cfg.few_cells:
        return None
    edge = np.zeros(len(size) + 1, dtype=bool)
    edge[np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = True
    whole = cells & ~edge[1:] & (size <= cfg.few_cells_area * math.pi * mx * mx)
    return _weighted_median(np.sqrt(size[whole] / math.pi)) if whole.any() else None


def _single_cells_radius(dt: np.ndarray, lab: np.ndarray, n: int, size: np.ndarray, rbc: np.ndarray,
                         speck_below: float, max_cells: float) -> float | None:
    """Weighted median thickness of the single red cells among the objects ``lab`` (their
    distance to glass ``dt``; None under three). A single cell covers no more than ``max_cells``
    discs of its thickness (an elongated cell measures its short axis, a clump its own
    thickness) and is no speck (platelets, debris under ``speck_below``). Thickness counts the
    field's edge as glass: a cell the edge cuts in half then measures half as thick and no
    longer round."""
    mx = label_max(_edge_as_glass(dt), lab, n)[1:]
    single = rbc & (size <= max_cells * math.pi * mx * mx) & (mx >= speck_below)
    return _weighted_median(mx[single]) if single.sum() >= 3 else None


def _edge_as_glass(dt: np.ndarray) -> np.ndarray:
    """A distance-to-glass map with the field's edge counted as glass too (the distance
    transform of the mask padded with glass, without computing it again)."""
    h, w = dt.shape
    to_row = np.minimum(np.arange(1, h + 1), np.arange(h, 0, -1))[:, None]
    to_col = np.minimum(np.arange(1, w + 1), np.arange(w, 0, -1))[None, :]
    return np.minimum(dt, np.minimum(to_row, to_col))


def _weighted_median(v: np.ndarray) -> float:
    """Median of ``v`` weighted by the values themselves (large objects count more)."""
    v = np.sort(v)
    cw = np.cumsum(v)
    return float(v[np.searchsorted(cw, 0.5 * cw[-1])])


def _round_holes(fg: np.ndarray) -> np.ndarray:
    """The enclosed holes of ``fg`` that are round (the pale centre of a ring-like red cell), not
    the concave gaps of glass that a clump of cells encloses."""
    lab, n = ndi.label(~fg)
    if n <= 1:
        return np.zeros_like(fg)
    size = np.bincount(lab.ravel(), minlength=n + 1).astype(np.float64)
    mx = label_max(ndi.distance_transform_edt(~fg), lab, n)
    fill = (mx >= 2.0) & (mx >= 0.7 * np.sqrt(size / math.pi)) & (size < 0.05 * fg.size)
    fill[0] = False
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    fill[edge] = False
    return fill[lab]


def _round_objects(mask: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` in round objects: thickness (the most of ``dist``, its distance
    map) at least :data:`_ROUND_OBJECT` of the equivalent radius."""
    objects, m = ndi.label(mask)
    if m == 0:
        return np.zeros_like(mask)
    area = np.bincount(objects.ravel(), minlength=m + 1).astype(np.float64)
    thickness = label_max(dist, objects, m)
    round_object = thickness >= _ROUND_OBJECT * np.sqrt(area / math.pi)
    round_object[0] = False
    return round_object[objects]


#: the least thickness / equivalent radius of a round object: two touching discs have
#: 1/sqrt(2) ~ 0.71, a clump of three or more less
_ROUND_OBJECT = 0.65


def _has_stained_object(raw: np.ndarray, cfg: SegmentConfig) -> bool:
    """Whether the coarse view holds anything stained: a field whose top 0.5% of pixels stand
    above glass, or (a few cells on a large field) one connected object of ``min_object_px``.
    The opening drops single noisy pixels, which never form an object of that size."""
    if float(np.percentile(raw, 99.5)) >= cfg.min_contrast_od:
        return True
    stained = ndi.binary_opening(raw > cfg.min_contrast_od)
    if not stained.any():
        return False
    lab, n = ndi.label(stained)
    return bool(np.bincount(lab.ravel())[1:].max() >= cfg.min_object_px)


def _measure(fg: np.ndarray, od: np.ndarray, cfg: SegmentConfig,
             max_area: float | None = None) -> tuple[RadiusEstimate, np.ndarray] | None:
    """The typical radius of the objects of ``fg`` and the compact chromatin (nuclei) left out."""
    # the stain's own chromatin measure, without the red term of a red-free stain
    # (:func:`.nuclei.red_chromatin_weight`): with it, bcd-256's white cells, pressed into clumps
    # of overlapping red cells, took their clumps out of the radius and the clumps' outline
    # peaks in, and radii grew 5-18% (bcd-256 red-cell recall 0.895 -> 0.872)
    chrom = chromatin_density(od, cfg)
    # thin violet fringes on red-cell rims (chromatic aberration) are not nuclei: an opening
    # keeps only compact chromatin
    nuc = ndi.binary_opening(chrom > nucleus_threshold(chrom, fg, cfg), iterations=2)
    est = _estimate_radius(ndi.binary_opening(fg), nuc, max_area, cfg)
    return None if est is None else (est, nuc)


def _made_of_cells(split: RadiusEstimate, cfg: SegmentConfig) -> bool:
    """Whether a field split nearer the cells' density is made of cells: no clump as its typical
    object, and single cells (three at least) about as thick as it (``clump_split_agree``: a
    little thinner, as blurred cells shrink most where they stand alone). Pale-centred cells
    break into rim arcs and specks there instead, much thinner than the pieces they split from,
    or leave whole cells thicker than those pieces."""
    if split.clumped or split.single_radius is None:
        return False
    lo, hi = cfg.clump_split_agree
    return lo <= split.single_radius / split.radius <= hi


def _unclumped(est: RadiusEstimate, fg: np.ndarray, raw: np.ndarray, nuc: np.ndarray,
               cfg: SegmentConfig) -> tuple[float, float | None]:
    """The typical radius, unless it is a clump's thickness: far over the single cells' (a
    defocused field of touching cells, whose narrow glass gaps the blur fills), which is then
    taken instead. With every object a clump, the field is split at a level nearer the cells'
    own density, where the gaps open again; its typical radius replaces the clumps' when far
    under it (``clump_split_ratio``: the cells measure thinner there) and made of single cells
    and pairs, not clumps (ring cells break into arcs there, with specks among them).

    Also returns the split's radius when it is made of cells but only ``clump_split_doubt`` to
    ``clump_split_ratio`` times under the clumps' (None otherwise): there blurred clumps of
    overlapping cells (bcd-256, 1.76-1.92) and pale-centred cells broken into arcs (TXL-PBC,
    1.93) look alike, and a learned centre map decides between the two (:func:`.field._surer_scale`)."""
    if est.single_radius is not None:
        return (est.single_radius if est.radius > cfg.clump_radius_ratio * est.single_radius else est.radius), None
    if not est.clumped:
        return est.radius, None
    body = float(np.percentile(raw[fg], 75))
    # smoothed over a pixel first: sensor noise would break the cells apart at that level
    smooth = ndi.gaussian_filter(raw, 1.0)
    doubt: float | None = None
    for level in cfg.clump_split_levels:
        split = ndi.binary_opening(fg & (smooth > level * body))
        # touching pairs count as single cells here: after a blur, cells rarely stand alone
        inner = _estimate_radius(split, nuc, None, cfg, speck_below=cfg.clump_speck_radius * est.radius,
                                 single_cells=cfg.clump_area_cells)
        if inner is None or not _made_of_cells(inner, cfg):
            continue
        if est.radius > cfg.clump_split_ratio * inner.radius:
            return inner.radius, None
        if doubt is None and est.radius >= cfg.clump_split_doubt * inner.radius:
            doubt = inner.radius
    return est.radius, doubt


@dataclass
class CoarsePass:
    """Step 1 of a field, kept to read it again at another scale (:func:`read_again`): the part
    analysed (blank areas painted glass) and what it has there, its coarse block size ``c``,
    the block-averaged field, glass map, density and thresholds (before any glass steps: those
    follow the radius)."""

    rgb: np.ndarray
    blank_px: np.ndarray | None
    blank: float
    offset: tuple[int, int]
    c: int
    small: np.ndarray
    bg_s: np.ndarray
    dens_s: tuple[np.ndarray, np.ndarray]
    thr: tuple[float, float, float]
    valid: np.ndarray | None


@dataclass
class Working:
    """A field at the working scale: the block-averaged image, its optical density (per channel
    and summed), cell mask, thresholds (low, high, glass level), block size and typical radius
    in original pixels."""

    work: np.ndarray
    od: np.ndarray
    raw: np.ndarray
    fg: np.ndarray
    thr: tuple[float, float, float]
    k: float  # whole, but for a finer read of overlapping cells (see :func:`.field._locate`)
    r_full: float
    blank: float = 0.0  # fraction of the field that is blank (white patches, padding, transparency)
    blank_in_part: float = 0.0  # ...and of the part analysed (blank margins cut off; the rest painted glass)
    blank_edge: np.ndarray | None = None  # working pixels on or next to a blank area (cells there are cut)
    offset: tuple[int, int] = (0, 0)  # (y, x) of the part analysed (blank margins cut off) in the field
    shape: tuple[int, int] = (0, 0)  # its size in original pixels
    #: a typical radius (coarse-pass pixels) the clumps' check could not rule out (see
    #: :func:`_unclumped`); None when the first one stands clear
    doubted_radius: float | None = None
    #: the coarse pass it was read from (the field at full resolution with it: dropped once no
    #: second read can follow, :func:`.field._locate`)
    coarse: CoarsePass | None = field(default=None, repr=False)


def _block_mean_f32(rgb: np.ndarray, k: float) -> np.ndarray:
    """:func:`block_mean` as float32 (a uint8 field's blocks sum to exactly the float32 field's);
    :func:`area_mean` for a block that is not whole (a finer read, :func:`working_scale`)."""
    if k != int(k):
        return area_mean(rgb, k)
    return block_mean(rgb, int(k)).astype(np.float32, copy=False)


@dataclass
class _Scale:
    """The working scale a first radius settles on (see :func:`_settle_scale`)."""

    k: float
    r_full: float
    work: np.ndarray
    od: np.ndarray
    raw: np.ndarray
    fg: np.ndarray
    #: the first re-measure at the working scale found cells far larger than the first radius,
    #: and not as clumps: that radius was too small
    grew_whole: bool


def block_size(r_full: float, cfg: SegmentConfig) -> int:
    """The block size that brings a typical radius of ``r_full`` px near ``work_radius_px``,
    rounded toward the finer scale (up only past ``work_scale_round_up``).

    The centre maps part deeply overlapping cells less well under ~10 working px of radius:
    bcd-256's test part (cells ~28 px) read red-cell recall 0.868 at blocks of 3 against 0.922
    at blocks of 2, and with plain rounding a radius read a few per cent high (26 -> 28.6 px under
    a 10-degree hue turn) flipped four of its fields from 2 to 3 and lost 17 cells. Full
    resolution only where plain rounding gives it: it costs four times the work of blocks of 2
    on the 640x480 fields whose cells (r ~17-21 px) sit there."""
    ratio = r_full / cfg.work_radius_px
    plain = max(1, int(round(ratio)))
    finer = int(math.floor(ratio + 1.0 - cfg.work_scale_round_up))
    return finer if finer >= 2 else plain


def _settle_scale(rgb: np.ndarray, c: int, small: np.ndarray, bg_s: np.ndarray,
                  dens_s: tuple[np.ndarray, np.ndarray], thr: tuple[float, float, float],
                  valid: np.ndarray | None, r_s: float, cfg: SegmentConfig, block: float | None = None) -> _Scale:
    """Step 2, from the coarse pass's radius ``r_s`` (block size ``c``): resample so the typical
    red cell has radius ~``work_radius_px`` and re-measure the radius there once (pale,
    ring-like cells are only filled at the right scale). A ``block`` given is taken as it is,
    with the radius ``r_s`` (a finer read of a field already measured)."""
    r_full = r_s * c
    # thresholds tile by tile where the field spans several slide areas (None: one field's worth)
    local = local_thresholds(dens_s[1], r_s, cfg, thr, valid)
    if block is not None:
        work = _block_mean_f32(rgb, block)
        od, raw, fg, _ = foreground(work, resize_to(bg_s, work.shape[:2]), r_full / block, cfg, thr, None, local=local)
        return _Scale(block, float(r_full), work, od, raw, fg, grew_whole=False)
    grew_whole = False
    for attempt in range(2):
        k = block_size(r_full, cfg)
        if k == c:
            work, bg, dens = small, bg_s, dens_s
        else:
            work = _block_mean_f32(rgb, k)
            bg, dens = resize_to(bg_s, work.shape[:2]), None
        od, raw, fg, _ = foreground(work, bg, r_full / k, cfg, thr, dens, local=local)
        measured = _measure(fg, od, cfg)
        r_new = None if measured is None else measured[0].radius
        if r_new is not None and r_new * k > cfg.remeasure_growth * r_full:
            grew_whole = grew_whole or (attempt == 0 and measured is not None and not measured[0].clumped)
            # far larger: in a crowded field of overlapping cells, block averaging fuses the
            # field into one or two clumps whose thickness is no radius; measured without them
            measured = _measure(fg, od, cfg, max_area=cfg.remeasure_max_cells * math.pi * (r_full / k) ** 2)
            r_new = None if measured is None else measured[0].radius
        if attempt or r_new is None:
            break
        r_new *= k
        if r_new < cfg.remeasure_floor * r_full:
            # far smaller at the working scale: touching cells fused there (a crowded,
            # high-magnification field); the first estimate stands
            break
        if block_size(r_new, cfg) == k:
            r_full = r_new
            break
        r_full = r_new
    return _Scale(k, float(r_full), work, od, raw, fg, grew_whole)


def working_scale(rgb: np.ndarray, cfg: SegmentConfig) -> Working | str:
    """Steps 0-3: blank areas painted glass, glass map, density, foreground and the typical
    radius, at the working scale (block size ``k``); a string says why the field holds no cells.
    The coarse pass comes with it (:attr:`Working.coarse`), for :func:`read_again`.

    ``rgb`` is float32 (:func:`as_rgb_float`) or, to spare a full-resolution float copy of a
    large field, an (H, W, 3) uint8 image: every result is the same."""
    if float(np.percentile(rgb[::4, ::4].astype(np.float32).mean(axis=2), 99)) < cfg.black_max_grey:
        return "no cells found: the field is black (no light reached the camera, or an empty image)"
    part = field_part(rgb, cfg)
    blank = part.blank_fraction
    if blank > 0.98:
        return f"no cells found: the field is blank ({100 * blank:.0f}% white, padded or transparent)"
    rgb, blank_px = part.rgb, part.blank
    H, W = rgb.shape[:2]
    # 1. coarse pass (~320 px, blocks of at most coarse_max_block px): glass colour map, thresholds,
    #    then the typical red-cell radius of this field (checked against clumps: a blur can fill
    #    the glass gaps of a crowded field; the re-measure below has its own clump rule)
    c = max(1, min(int(max(H, W) // 320), cfg.coarse_max_block))
    small = _block_mean_f32(rgb, c)
    bg_s = background_map(small, cfg)
    dens_s = optical_density(small, bg_s)
    # thresholds measured on the part that is not blank (painted glass is no glass of the smear)
    valid = None if blank_px is None else block_mean(blank_px.astype(np.float32), c) < 0.5
    od_s, raw_s, fg_s, thr = foreground(small, bg_s, None, cfg, density=dens_s, valid=valid)
    if not _has_stained_object(raw_s, cfg):
        return "no cells found: the field has no stained objects (blank slide?)"
    measured = _measure(fg_s, od_s, cfg)
    if measured is None:
        return "no cells found: no object large enough to be a cell"
    est, nuc = measured
    r_s, doubted = _unclumped(est, fg_s, raw_s, nuc, cfg)
    coarse = CoarsePass(rgb, blank_px, blank, part.offset, c, small, bg_s, dens_s, thr, valid)
    # the clumps' check may misread a field (pale-centred cells split into arcs, or specks taken
    # for single cells): at the working scale its cells then measure whole, far larger
    return _read(coarse, r_s, cfg, doubted, whole_radius=est.radius if r_s != est.radius else None)


def read_again(wv: Working, cfg: SegmentConfig, coarse_radius: float | None = None,
               block: float | None = None) -> Working:
    """The field of ``wv`` read again from its coarse pass: at a typical radius of
    ``coarse_radius`` coarse-pass pixels (a :attr:`Working.doubted_radius`), or at its own
    radius and the block size ``block``, which need not be whole (overlapping cells,
    :func:`.field._locate`)."""
    assert wv.coarse is not None, "read_again needs the coarse pass (Working.coarse)"
    r_s = coarse_radius if coarse_radius is not None else wv.r_full / wv.coarse.c
    return _read(wv.coarse, r_s, cfg, block=block)


def _read(co: CoarsePass, r_s: float, cfg: SegmentConfig, doubted: float | None = None,
          block: float | None = None, whole_radius: float | None = None) -> Working:
    """Steps 2-3 from the coarse pass ``co`` and a typical radius of ``r_s`` coarse-pass pixels;
    when the re-measure finds the cells whole and far larger, ``whole_radius`` (if given) is
    settled from instead."""
    bg_s, dens_s, thr = co.bg_s, co.dens_s, co.thr
    if cfg.glass_step_reach > 0 and spans_several_areas(co.small.shape, r_s, cfg):
        # a field of several slide areas: its glass may step from one to the next (a mosaic
        # of fields imaged apart), which one smooth glass map does not follow
        bg_s = follow_glass_steps(bg_s, dens_s[0], r_s, cfg)
        dens_s = optical_density(co.small, bg_s)
        thr = hysteresis_thresholds(dens_s[1], cfg, co.valid)
    scale = _settle_scale(co.rgb, co.c, co.small, bg_s, dens_s, thr, co.valid, r_s, cfg, block)
    if whole_radius is not None and scale.grew_whole:
        scale = _settle_scale(co.rgb, co.c, co.small, bg_s, dens_s, thr, co.valid, whole_radius, cfg)
    edge = None
    if co.blank_px is not None:
        edge = ndi.binary_dilation(_block_mean_f32(co.blank_px.astype(np.float32), scale.k) > 0, iterations=1)
    return Working(work=scale.work, od=scale.od, raw=scale.raw, fg=scale.fg, thr=thr, k=scale.k,
                   r_full=float(scale.r_full), blank=co.blank, blank_edge=edge, offset=co.offset,
                   shape=co.rgb.shape[:2], blank_in_part=0.0 if co.blank_px is None else float(co.blank_px.mean()),
                   doubted_radius=doubted, coarse=co)


@dataclass
class WorkingView:
    """A field as the localizer sees it (what a centre-map network reads and is trained on).

    Attributes:
        od: (h, w, 3) float32 optical density of each channel above the glass, at the
            working scale.
        k: block size: one working pixel averages k x k original pixels (whole, as the
            localizer is trained on).
        radius: typical red-cell radius in working pixels (~``work_radius_px``).
    """

    od: np.ndarray
    k: int
    radius: float


def working_view(image: np.ndarray, config: SegmentConfig = SegmentConfig()) -> WorkingView | None:
    """The working-scale optical density of ``image`` (``None`` for a field without cells)."""
    rgb = as_rgb_float(image)
    if rgb is None or min(rgb.shape[:2]) < 8:
        return None
    wv = working_scale(rgb, config)
    if isinstance(wv, str):
        return None
    return WorkingView(od=wv.od.astype(np.float32), k=int(wv.k), radius=wv.r_full / wv.k)  # the first read: whole
