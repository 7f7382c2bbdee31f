"""Steps 5-6, regions: the watershed from the seeds, fragments joined back to their cell, overlapping
cells split by k-means, the kind of each region and the full-resolution cells."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import segmentation

from ..labels import PLATELET, UNCLASSIFIED
from ..types import Cell
from .arrays import ellipse_eccentricity
from .config import SegmentConfig
from .pairs import shared_borders
from .seeds import Seeds


def flood(seeds: Seeds, learned: bool) -> np.ndarray:
    """The watershed from the seeds over the seed mask. Hand-made seeds sit on distance maxima
    (flood the inverted distance transform); learned seeds sit where the cells are, not on
    distance maxima (two touching cells often make one distance hill): flood by distance from
    the seeds, deeper pixels first."""
    if learned:
        surface = ndi.distance_transform_edt(seeds.markers == 0) - seeds.height
    else:
        surface = -seeds.height
    return segmentation.watershed(surface, seeds.markers, mask=seeds.mask)


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


def merge_fragments(ws: np.ndarray, nm: int, n_nuc: int, r: float, cfg: SegmentConfig) -> np.ndarray:
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
    borders = shared_borders(ws, np.arange(nm + 1) > n_nuc)
    if not len(borders.pairs):
        return ws
    pairs, contact = borders.pairs, borders.contact
    small = np.minimum(areas[pairs[:, 0]], areas[pairs[:, 1]])
    keep = (contact >= cfg.fragment_contact * r) & (small <= cfg.fragment_area * typical)
    if not keep.any():
        return ws
    lut = np.arange(nm + 1, dtype=np.int32)
    objs = ndi.find_objects(ws, max_label=nm)
    for lo, hi in pairs[keep][np.argsort(-contact[keep])].tolist():
        i, j = int(lut[lo]), int(lut[hi])
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


def absorb_pieces(ws: np.ndarray, nm: int, pieces: np.ndarray, targets: np.ndarray, min_contact: float,
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


def split_large(
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


def region_stats(lab: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Area, centroid, central second moments and eccentricity of every label at once
    (vectorised moments)."""
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
    return {"n": cnt, "cx": cx, "cy": cy, "mxx": mxx, "myy": myy, "mxy": mxy,
            "ecc": ellipse_eccentricity(mxx, myy, mxy)}


@dataclass
class Regions:
    """Watershed regions and their measurements (labels 1..count)."""

    labels: np.ndarray
    count: int
    stats: dict[str, np.ndarray]
    boxes: list[tuple[slice, ...] | None]


def measure_regions(ws: np.ndarray, nm: int) -> Regions:
    return Regions(labels=ws, count=nm, stats=region_stats(ws, nm), boxes=ndi.find_objects(ws, max_label=nm))


def _on_border(sl: tuple[slice, ...], h: int, w: int) -> bool:
    """Whether a region's box is cut by the image edge."""
    return sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w


def cut_flags(regions: Regions, edge: np.ndarray | None) -> np.ndarray:
    """Per label 0..n: whether the region is cut by the image edge or, when ``edge`` (the rim
    of the blank areas, at the working scale) is given, by a blank area."""
    h, w = regions.labels.shape
    out = np.array([False] + [sl is not None and _on_border(sl, h, w) for sl in regions.boxes], dtype=bool)
    if edge is not None:
        out |= np.bincount(regions.labels.ravel(), weights=edge.ravel(), minlength=regions.count + 1) > 0
    return out


def _flags(ids: np.ndarray, n: int) -> np.ndarray:
    """A boolean per label 0..n, true for ``ids``."""
    out = np.zeros(n + 1, dtype=bool)
    out[ids] = True
    return out


def region_kinds(regions: Regions, n_nuc: int, od: np.ndarray, chrom: np.ndarray, nucleus_od: float,
                 seeds: Seeds, learned: bool, cell_area: float,
                 cfg: SegmentConfig, edge: np.ndarray | None = None) -> tuple[dict[int, str], list[int]]:
    """The kind of every region: nucleated (a nuclear group), platelet (small and denser in
    chromatin than the red cells (``chrom``, :func:`.nuclei.chromatin_density`), or platelet-sized, or a learned platelet centre's), dropped (debris), or red
    cell. With a learned centre map, a red-cell region no centre seeded must be large; a smaller
    one is returned among the pieces to rejoin. Regions cut by the image edge (or by a blank
    area, ``edge``) keep smaller sizes. Returns the kinds by label and those pieces."""
    ws, nm, stats = regions.labels, regions.count, regions.stats
    cut = cut_flags(regions, edge)
    sum_chrom = np.bincount(ws.ravel(), weights=chrom.ravel(), minlength=nm + 1)
    sum_od = np.bincount(ws.ravel(), weights=od.sum(axis=2).ravel(), minlength=nm + 1)
    mean_chrom = sum_chrom / np.maximum(stats["n"], 1)
    # chromatin share of the absorbance (violet on Wright): platelets (and nuclei) are bluer
    # than the red cells
    share = sum_chrom / np.maximum(sum_od, 1e-6)
    big = stats["n"] >= 0.4 * cell_area
    big[: n_nuc + 1] = False
    rbc_share = float(np.median(share[big])) if big.any() else 0.25
    # regions grown from a learned red-cell centre (the others must be large to count)
    is_rbc_seed = _flags(seeds.rbc_ids, nm)
    is_plt_seed = _flags(seeds.platelet_ids, nm)
    kinds: dict[int, str] = {}
    pieces: list[int] = []
    for lab_id, sl in enumerate(regions.boxes, start=1):
        if sl is None:
            continue
        border = bool(cut[lab_id])
        rel = float(stats["n"][lab_id]) / cell_area
        if lab_id <= n_nuc:
            kind = "nucleated"
        elif is_plt_seed[lab_id] and cfg.platelet_min_area <= rel < cfg.platelet_max_area:
            kind = "platelet"
        elif rel < cfg.platelet_max_area and (
            mean_chrom[lab_id] > cfg.platelet_rel_viol * nucleus_od
            or share[lab_id] > rbc_share + cfg.platelet_share_margin
        ):
            kind = "platelet"
        elif not border and cfg.platelet_min_area <= rel < cfg.debris_area:
            # platelet-sized (~2-3 um) even when its stain is not violet (pale or grey
            # platelets); smaller specks are dust or stain precipitate
            kind = "platelet"
        elif rel < (cfg.border_min_area if border else cfg.debris_area):
            continue
        elif learned and not is_rbc_seed[lab_id] and rel < (
            cfg.unseeded_border_min_area if border else cfg.unseeded_min_area
        ):
            # the centre map saw no red cell here: a piece cut from a seeded cell (a k-means
            # split of one large cell) goes back to it, anything else is dropped
            pieces.append(lab_id)
            continue
        else:
            kind = "rbc"
        kinds[lab_id] = kind
    return kinds, pieces


def rejoin_pieces(regions: Regions, pieces: list[int], kinds: dict[int, str], seeds: Seeds, r: float,
                  cfg: SegmentConfig) -> Regions:
    """Unseeded pieces go back to the seeded red cell they were cut from (:func:`absorb_pieces`)."""
    nm = regions.count
    is_rbc_seed = _flags(seeds.rbc_ids, nm)
    targets = np.zeros(nm + 1, dtype=bool)
    targets[[i for i, kd in kinds.items() if kd == "rbc" and is_rbc_seed[i]]] = True
    ws, changed = absorb_pieces(regions.labels, nm, np.asarray(pieces), targets, cfg.fragment_contact * r,
                                cfg.fragment_solidity)
    return measure_regions(ws, nm) if changed else regions


def learned_centres(regions: Regions, seeds: Seeds) -> dict[int, tuple[float, float]]:
    """(y, x) of the learned red-cell centre that seeded each region and still lies in it."""
    ys, xs = np.nonzero(np.isin(seeds.markers, seeds.rbc_ids))
    own = regions.labels[ys, xs] == seeds.markers[ys, xs]  # a seed merged into another region is not its centre
    return {int(i): (float(y), float(x)) for i, y, x in zip(regions.labels[ys, xs][own], ys[own], xs[own], strict=True)}


def build_cells(regions: Regions, kinds: dict[int, str], k: float, full_shape: tuple[int, int],
                um_per_px: float, r_full: float, edge: np.ndarray | None = None,
                centres: dict[int, tuple[float, float]] | None = None) -> list[Cell]:
    """One full-resolution :class:`Cell` per kept region, ids in reading order (rows about one
    radius high, then left to right); those cut by the image edge or a blank area (``edge``)
    are flagged ``touches_border``.

    A cell is placed at its region's centroid; a red cell cut by the edge, at the learned centre
    that seeded it when there is one (``centres``, :func:`learned_centres`): a sliver of a cell
    at the image edge is thinner than the working scale resolves, its region takes in some of
    the neighbour it overlaps and the centroid falls outside the sliver (bcd-256: 6 of the 7
    cells whose centre map had a peak inside them but no detection), while the centre map saw
    the sliver itself. Inner cells keep the centroid: it is finer than the working pixel the
    learned centre is given in, and their crops for the classifier are centred on it."""
    H, W = full_shape
    stats = regions.stats
    cut = cut_flags(regions, edge)
    cells: list[Cell] = []
    for lab_id, kind in sorted(kinds.items()):
        sl = regions.boxes[lab_id - 1]
        if sl is None:
            continue
        m = regions.labels[sl] == lab_id
        cy, cx = stats["cy"][lab_id], stats["cx"][lab_id]
        if centres and kind == "rbc" and cut[lab_id] and lab_id in centres:
            cy, cx = centres[lab_id]
        cells.append(_make_cell(m, sl[0].start, sl[1].start, k, H, W, bool(cut[lab_id]), kind, um_per_px,
                                cy, cx, stats["ecc"][lab_id]))
    cells.sort(key=lambda cl: (round(cl.y / max(r_full, 1.0)), cl.x))
    for i, cl in enumerate(cells):
        cl.id = i
    return cells


def full_span(start: int, stop: int, k: float) -> tuple[int, int]:
    """The original pixels ``[start', stop')`` of working pixels ``[start, stop)`` at block size
    ``k``: those whose centre falls in them (for a whole ``k``, ``start k`` and ``stop k``)."""
    return math.ceil(start * k - 0.5), math.ceil(stop * k - 0.5)


def full_resolution_mask(m: np.ndarray, y0: int, x0: int, k: float) -> tuple[np.ndarray, int, int]:
    """A working-scale mask whose top-left pixel is (``y0``, ``x0``), at full resolution (block
    size ``k``), and its top-left pixel there: each original pixel takes the working pixel its
    centre falls in (:func:`full_span`)."""
    if k == int(k):
        k = int(k)
        return (m.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else m), y0 * k, x0 * k
    fy0, fy1 = full_span(y0, y0 + m.shape[0], k)
    fx0, fx1 = full_span(x0, x0 + m.shape[1], k)
    rows = (np.floor((np.arange(fy0, fy1) + 0.5) / k).astype(np.int64) - y0).clip(0, m.shape[0] - 1)
    cols = (np.floor((np.arange(fx0, fx1) + 0.5) / k).astype(np.int64) - x0).clip(0, m.shape[1] - 1)
    return m[np.ix_(rows, cols)], fy0, fx0


def _make_cell(
    m: np.ndarray, y0: int, x0: int, k: float, H: int, W: int, border: bool, kind: str,
    um_per_px: float, cy: float, cx: float, ecc: float,
) -> Cell:
    """Build a full-resolution :class:`Cell` from a working-scale mask and its moments."""
    full, fy0, fx0 = full_resolution_mask(m, y0, x0, k)
    fy1, fx1 = min(fy0 + full.shape[0], H), min(fx0 + full.shape[1], W)
    full = full[: fy1 - fy0, : fx1 - fx0]
    area = float(full.sum())
    d = math.sqrt(4.0 * area / math.pi)
    # the last working row or column may hang over the image's edge (blocks of k px): a centre
    # there is put back on the image
    return Cell(
        id=0,
        x=float(min(max((cx + 0.5) * k - 0.5, 0.0), W - 1)),
        y=float(min(max((cy + 0.5) * k - 0.5, 0.0), H - 1)),
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
