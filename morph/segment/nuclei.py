"""Step 4, nuclei: pixels of dense chromatin (dark violet on Wright, dark blue on NMB) grouped
into one nucleated cell each, the zone of stained pixels each one owns, and the cytoplasm left
over after the watershed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage import morphology

from .arrays import label_max
from .config import SegmentConfig


def chromatin_density(od: np.ndarray, cfg: SegmentConfig, red_weight: float = 0.0) -> np.ndarray:
    """Chromatin density: the optical density weighted by the stain's ``chromatin_od`` (on
    Wright green absorbed minus blue absorbed, "violet"); high in nuclei and platelets. Plus
    ``red_weight`` times the red absorbance, where the red cells absorb almost no red
    (:func:`red_chromatin_weight`)."""
    terms = [w * od[:, :, c] for c, w in enumerate(cfg.chromatin_od) if w]
    chrom = sum(terms[1:], terms[0]) if terms else np.zeros(od.shape[:2], od.dtype)
    return chrom + np.float32(red_weight) * od[:, :, 0] if red_weight > 0 else chrom


def red_chromatin_weight(od: np.ndarray, fg: np.ndarray, cfg: SegmentConfig) -> float:
    """The weight of the red absorbance in the chromatin density: ``chromatin_red_weight`` when
    the red cells' (the foreground's median) red share of the absorbance is under
    ``chromatin_red_share[0]``, none over ``chromatin_red_share[1]``, linear between."""
    if cfg.chromatin_red_weight <= 0 or not fg.any():
        return 0.0
    total = od.sum(axis=2)
    stained = fg & (total > 0.1)  # the faint fringes' share is noise
    if not stained.any():
        return 0.0
    share = float(np.median(od[:, :, 0][stained] / total[stained]))
    lo, hi = cfg.chromatin_red_share
    return cfg.chromatin_red_weight * float(np.clip((hi - share) / max(hi - lo, 1e-6), 0.0, 1.0))


def nucleus_threshold(chrom: np.ndarray, fg: np.ndarray, cfg: SegmentConfig) -> float:
    """Chromatin-density threshold of nuclei: well above the typical red-cell value."""
    level = float(np.median(chrom[fg])) if fg.any() else 0.0
    return max(cfg.nucleus_min_od, cfg.nucleus_rel_od * max(level, 0.0))


def nuclear_groups(nuclear: np.ndarray, r: float, cell_area: float, cfg: SegmentConfig) -> tuple[np.ndarray, int]:
    """Nuclear pixels (dense chromatin, :func:`chromatin_density`) grouped by a closing of
    ``0.35 r`` so a neutrophil's lobes make one cell; groups with less nuclear area than
    ``nucleus_min_area`` are dropped. Returns int32 labels 1..n and n."""
    nuc = ndi.binary_opening(nuclear)
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
    nuc_groups = np.zeros(nuclear.shape, dtype=np.int32)
    n_nuc = 0
    if ng:
        nuc_area = np.bincount(glab.ravel(), weights=nuc.ravel(), minlength=ng + 1)
        keep = nuc_area >= cfg.nucleus_min_area * cell_area
        keep[0] = False
        if keep.any():
            ids = np.cumsum(keep) * keep
            nuc_groups = ids[glab].astype(np.int32)
            n_nuc = int(keep.sum())
    return nuc_groups, n_nuc


def drop_rims(groups: np.ndarray, n: int, nuclear: np.ndarray, fg: np.ndarray, r: float,
              cfg: SegmentConfig) -> tuple[np.ndarray, int]:
    """Drop the nuclear groups that are the dark rim of a hypochromic ("ring") red cell, not
    chromatin: a nucleus, even a hypersegmented neutrophil's lobe, is a compact body. Only thin
    groups (chromatin nowhere thicker than ``nucleus_rim_thickness``, half-width in units of
    ``r``) are examined (:func:`_rim_shaped`). Returns the remaining groups relabelled 1..n and n."""
    if not n or cfg.nucleus_rim_thickness <= 0:
        return groups, n
    nuc, thin = _thin_groups(groups, n, nuclear, r, cfg.nucleus_rim_thickness)
    if not thin.any():
        return groups, n
    area = np.bincount(groups.ravel(), weights=nuc.ravel(), minlength=n + 1)
    to_glass = ndi.distance_transform_edt(fg)
    near_glass = nuc & (to_glass <= cfg.nucleus_rim_edge * r)
    along_glass = np.bincount(groups.ravel(), weights=near_glass.ravel(), minlength=n + 1) / np.maximum(area, 1.0)
    rim = np.zeros(n + 1, dtype=bool)
    boxes = ndi.find_objects(groups, max_label=n)
    for i in np.nonzero(thin)[0]:
        box = boxes[i - 1]
        rim[i] = _rim_shaped(groups[box] == i, to_glass[box] / r, float(area[i]),
                             bool(along_glass[i] >= cfg.nucleus_rim_edge_share), cfg)
    return _without(groups, n, rim)


def without_rim_pieces(nuclear: np.ndarray, fg: np.ndarray, r: float, cfg: SegmentConfig) -> np.ndarray:
    """``nuclear`` less its connected pieces that are ring-cell rims on their own (the test of
    :func:`drop_rims`, piece by piece), before the closing that groups a neutrophil's lobes.

    Why: that closing bridges gaps of up to ~0.7 r, so on an iron-deficiency field a white cell
    next to a chain of touching ring cells took their rims into its nuclear group, and a rim
    group once joined to a nucleus is no longer thin enough to be recognised as a rim."""
    if cfg.nucleus_rim_thickness <= 0:
        return nuclear
    pieces, m = ndi.label(ndi.binary_opening(nuclear))
    if not m:
        return nuclear
    kept, _ = drop_rims(pieces.astype(np.int32), m, nuclear, fg, r, cfg)
    return nuclear & ~((pieces > 0) & (kept == 0))


def drop_red_cell_hue(groups: np.ndarray, n: int, nuclear: np.ndarray, chrom: np.ndarray, od: np.ndarray,
                      fg: np.ndarray, r: float, cfg: SegmentConfig,
                      vouched: np.ndarray | None = None, red_weight: float = 0.0) -> tuple[np.ndarray, int]:
    """Drop the nuclear groups that have the red cells' hue, not chromatin's. Where two red cells
    overlap, the stacked haemoglobin is dark enough to pass the chromatin threshold, but its
    chromatin share of the absorbance is the red cells' own. Measured on rendered Wright
    fields (violet share), overlaps sit within 0.03 of the red cells' share (0.06 on ring cells) and nuclei
    0.07-0.24 above it; on TXL-PBC white cells at least 0.16 above. A group is kept when its
    median share exceeds the red cells' median by ``nucleus_share_margin``, or when it holds a
    ``vouched`` pixel (a learned nucleated-cell centre: on bcd-256's stain white-cell nuclei sit
    only 0.02-0.07 above the red cells on violet alone; the red term of
    :func:`red_chromatin_weight` lifts them 0.3 above). A thin group (two ring-cell rims overlapping) needs
    ``nucleus_thin_share_margin``. Returns the remaining groups relabelled 1..n and n."""
    if not n or cfg.nucleus_share_margin <= 0:
        return groups, n
    red = fg & ~nuclear
    if not red.any():
        return groups, n
    total = np.maximum(od.sum(axis=2), 1e-6)
    group_share, red_share = _median_shares(chrom / total, groups, n, nuclear, red)
    _, thin = _thin_groups(groups, n, nuclear, r, cfg.nucleus_thin)
    margin = np.where(thin[1:],
                      max(cfg.nucleus_share_margin, cfg.nucleus_thin_share_margin), cfg.nucleus_share_margin)
    drop = np.concatenate([[False], ~(group_share > red_share + margin)])
    if vouched is not None and drop.any():
        drop[np.unique(groups[vouched])] = False
    if red_weight > 0:
        # the groups whose chromatin absorbs red light no more than the red cells do: where the
        # red cells absorb no red, a nucleus absorbs much (bcd-256: 0.29-0.40 against
        # 0.00-0.05); red cells stacked over each other stay red-free, learned centre or not
        # (bcd-256 turned 20 degrees in hue: overlapping red cells read as three white cells)
        group_red, red_red = _median_shares(od[:, :, 0] / total, groups, n, nuclear, red)
        drop[1:] |= ~(group_red > red_red + cfg.nucleus_red_share_margin)
    return _without(groups, n, drop)


def find_nuclear_groups(nuclear: np.ndarray, chrom: np.ndarray, od: np.ndarray, fg: np.ndarray, r: float,
                        cell_area: float, cfg: SegmentConfig, vouched: np.ndarray | None = None,
                        red_weight: float = 0.0) -> tuple[np.ndarray, int]:
    """Nuclear pixels (``chrom`` over the nucleus threshold) to nuclear groups: ring-cell rim
    pieces removed, a cell's lobes grouped, ring-cell rims and stacked red cells dropped
    (:func:`drop_red_cell_hue`; ``vouched``: learned nucleated-cell centres)."""
    nuclear = without_rim_pieces(nuclear, fg, r, cfg)
    groups, n = nuclear_groups(nuclear, r, cell_area, cfg)
    groups, n = drop_rims(groups, n, nuclear, fg, r, cfg)
    return drop_red_cell_hue(groups, n, nuclear, chrom, od, fg, r, cfg, vouched=vouched, red_weight=red_weight)


def nuclei_seen_in_red(groups: np.ndarray, n: int, learned: np.ndarray | None, od: np.ndarray, fg: np.ndarray,
                       r: float, cell_area: float, cfg: SegmentConfig,
                       red_weight: float) -> tuple[np.ndarray, int]:
    """``groups`` plus the nuclei that only the red absorbance shows, where a learned
    nucleated-cell centre vouches for them.

    The red term of the chromatin density (:func:`red_chromatin_weight`) is switched on by the
    red cells' red share of the absorbance, an absolute level that another lab's dye mix moves:
    bcd-256 turned 20 degrees in hue, or at saturation x0.6, puts its red cells at 0.10-0.15,
    past the switch, and its pale white-cell nuclei (0.02-0.07 above the red cells on violet
    alone) went missing, 22 of 22 and 11 of 22, to be read as red cells; the centre map still
    saw them. So where the term is off or partly on and a learned nucleated-cell centre has no
    nucleus within ``learned_nucleus_reach`` r, the nuclei are sought again with the full term,
    and a group found there joins (its red share must still pass ``nucleus_red_share_margin``
    over the red cells, so stacked red cells stay out)."""
    full = cfg.chromatin_red_weight
    if learned is None or red_weight >= full or cfg.learned_nucleus_reach <= 0 or not learned.any():
        return groups, n
    reach = cfg.learned_nucleus_reach * r
    found = groups > 0
    lonely = [(int(y), int(x)) for y, x in zip(*np.nonzero(learned), strict=True)
              if not (n and _touches_disc(found, int(y), int(x), reach))]
    if not lonely:
        return groups, n
    near = _discs(groups.shape, lonely, reach)
    chrom = chromatin_density(od, cfg, full)
    # only chromatin around those centres is looked at again (a nucleus lies within ~1.5 r of
    # its cell's centre): the field's other dense pixels cost time and change nothing
    nuclear = (chrom > nucleus_threshold(chrom, fg, cfg)) & _discs(groups.shape, lonely, 2.0 * r)
    seen, m = find_nuclear_groups(nuclear, chrom, od, fg, r, cell_area, cfg, vouched=near, red_weight=full)
    keep = np.zeros(m + 1, dtype=bool)
    keep[np.unique(seen[near])] = True
    keep[np.unique(seen[found])] = False  # a nucleus already found is not found twice
    keep[0] = False
    if not keep.any():
        return groups, n
    lut = np.zeros(m + 1, dtype=np.int32)
    lut[keep] = n + 1 + np.arange(int(keep.sum()), dtype=np.int32)
    return np.where(found, groups, lut[seen]).astype(groups.dtype, copy=False), n + int(keep.sum())


def _disc(shape: tuple[int, ...], y: int, x: int, radius: float) -> tuple[tuple[slice, slice], np.ndarray]:
    """The window of an image of ``shape`` about (``y``, ``x``) and, in it, the disc of ``radius``."""
    rad = int(math.ceil(radius))
    y0, y1, x0, x1 = max(0, y - rad), min(shape[0], y + rad + 1), max(0, x - rad), min(shape[1], x + rad + 1)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    return (slice(y0, y1), slice(x0, x1)), (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius


def _discs(shape: tuple[int, ...], centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    """A mask of the discs of ``radius`` about ``centres`` (few), painted window by window."""
    out = np.zeros(shape[:2], dtype=bool)
    for y, x in centres:
        window, disc = _disc(out.shape, y, x, radius)
        out[window] |= disc
    return out


def _touches_disc(mask: np.ndarray, y: int, x: int, radius: float) -> bool:
    """Whether ``mask`` holds a pixel within ``radius`` of (``y``, ``x``) (its window alone is read)."""
    window, disc = _disc(mask.shape, y, x, radius)
    return bool((mask[window] & disc).any())


def _median_shares(share: np.ndarray, groups: np.ndarray, n: int, nuclear: np.ndarray,
                   red: np.ndarray) -> tuple[np.ndarray, float]:
    """The median of ``share`` (a share of the absorbance) over each group's chromatin (groups
    1..n) and over the red cells (``red``)."""
    chromatin = np.where(nuclear, groups, 0)
    by_group = np.asarray(ndi.median(share, labels=chromatin, index=np.arange(1, n + 1)), dtype=float)
    return by_group, float(np.median(share[red]))


def _thin_groups(groups: np.ndarray, n: int, nuclear: np.ndarray, r: float,
                 half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """The groups' chromatin (opened) and, by label (``[0]`` False), whether it is nowhere
    thicker than ``half_width`` (units of ``r``)."""
    nuc = ndi.binary_opening(nuclear) & (groups > 0)
    thin = label_max(ndi.distance_transform_edt(nuc), groups, n) < half_width * r
    thin[0] = False
    return nuc, thin


def _without(groups: np.ndarray, n: int, drop: np.ndarray) -> tuple[np.ndarray, int]:
    """``groups`` with the labels flagged in ``drop`` (indexed by label, ``drop[0]`` False)
    removed and the rest renumbered 1..; and their number."""
    if not drop.any():
        return groups, n
    lut = np.cumsum(~drop) - 1  # kept labels renumbered 1..; label 0 stays 0
    lut[drop] = 0
    return lut.astype(np.int32)[groups], int(n - drop.sum())


def _rim_shaped(group: np.ndarray, to_glass: np.ndarray, chromatin_area: float, along_glass: bool,
                cfg: SegmentConfig) -> bool:
    """Whether a thin nuclear group is the rim of a red-cell-sized body: what it encloses lies
    within ``nucleus_rim_host`` (units of ``r``) of the glass (a white cell, whose lobes may also
    form a chain or a ring, is bigger), and it either encloses a pale hole of at least
    ``nucleus_rim_hole`` times its own area (a closed ring) or runs along the glass as a curved
    band (solidity under ``nucleus_rim_solidity``)."""
    filled = ndi.binary_fill_holes(group)
    hull = morphology.convex_hull_image(filled)
    if float(to_glass[hull].max()) >= cfg.nucleus_rim_host:
        return False
    if float(filled.sum() - group.sum()) >= cfg.nucleus_rim_hole * max(chromatin_area, 1.0):
        return True
    return along_glass and float(filled.sum()) < cfg.nucleus_rim_solidity * float(hull.sum())


def split_nuclear_groups(groups: np.ndarray, n: int, peaks: np.ndarray) -> tuple[np.ndarray, int]:
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


@dataclass
class Nuclei:
    """The nucleated cells of a field at the working scale and the zones they own.

    Attributes:
        groups: int32 labels 1..n of the nuclear groups (0 elsewhere).
        n: number of nucleated cells.
        zone_labels: each nucleated cell's zone (its stained pixels within ``cytoplasm_reach``
            of its nucleus), 0 elsewhere; without nuclei, ``groups``.
        rbc_foreground: the foreground outside every zone, where red-cell seeds are sought.
        distance: distance (working px) to the nearest nucleus; None without nuclei.
        nearest: (rows, cols) of that nearest nucleus pixel; None without nuclei.
        near: within half a radius of a nucleus, where no other seed may sit; None without nuclei.
    """

    groups: np.ndarray
    n: int
    zone_labels: np.ndarray
    rbc_foreground: np.ndarray
    distance: np.ndarray | None = None
    nearest: tuple[np.ndarray, np.ndarray] | None = None
    near: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray:
        return self.groups > 0


def nucleated_zones(groups: np.ndarray, n: int, fg: np.ndarray, r: float, cfg: SegmentConfig) -> Nuclei:
    """Each nucleated cell owns the stained pixels within a cytoplasm reach of its nucleus; red-cell
    seeds are found on the rest, so red cells touching a white cell keep their own seeds instead
    of being flooded by the (much larger) white cell."""
    if not n:
        return Nuclei(groups=groups, n=n, zone_labels=groups, rbc_foreground=fg)
    nuc_any = groups > 0
    nd, (iy, ix) = ndi.distance_transform_edt(~nuc_any, return_indices=True)
    zone = (nd <= cfg.cytoplasm_reach * r) & (fg | nuc_any)
    return Nuclei(
        groups=groups, n=n,
        zone_labels=np.where(zone, groups[iy, ix], 0).astype(np.int32),
        rbc_foreground=fg & ~zone,
        distance=nd, nearest=(iy, ix),
        near=nd <= max(1, int(round(0.5 * r))),  # = dilation by that disk
    )


def join_cytoplasm(ws: np.ndarray, nm: int, nuclei: Nuclei, r: float, cell_area: float,
                   cfg: SegmentConfig, red_cells: np.ndarray | None = None) -> np.ndarray:
    """Left-over white-cell cytoplasm: small regions lying almost wholly close to a nucleus (within
    ``cytoplasm_max_reach``) join that nucleated cell instead of being reported as red cells.
    ``red_cells``: region ids grown from a learned red-cell centre, which are never joined."""
    if nuclei.distance is None or nuclei.nearest is None:
        return ws
    iy, ix = nuclei.nearest
    near = (nuclei.distance <= cfg.cytoplasm_max_reach * r).ravel()
    flat = ws.ravel()
    cnt = np.bincount(flat, minlength=nm + 1).astype(np.float64)
    frac = np.bincount(flat, weights=near, minlength=nm + 1) / np.maximum(cnt, 1.0)
    owner = np.asarray(label_max(nuclei.groups[iy, ix], ws, nm), dtype=np.int32)
    lut = np.arange(nm + 1, dtype=np.int32)
    sel = (frac >= 0.85) & (cnt < cfg.cytoplasm_max_area * cell_area) & (owner > 0)
    sel[: nuclei.n + 1] = False
    if red_cells is not None:
        sel[red_cells[red_cells <= nm]] = False
    lut[sel] = owner[sel]
    return lut[ws]
