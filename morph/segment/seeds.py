"""Step 5, seeds: one watershed marker per cell. With a learned centre map its red-cell peaks are
the seeds and platelet centres pressed against a cell get their own; without one, circle centres
voted by the outline (radial symmetry) and distance-transform maxima; small objects behind a
neck get a seed of their own either way."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

from ..types import CentreMap
from .config import SegmentConfig
from .nuclei import Nuclei
from .pairs import PairJudge

#: spacing (units of r) of the learned nucleated-cell and platelet seeds; red cells use the
#: detector's own ``min_distance``
PEAK_SPACING: dict[str, float] = {"nucleated": 1.0, "platelet": 0.5}


def centre_peaks(heat: np.ndarray, threshold: float, spacing: float) -> np.ndarray:
    """Seeds from a centre map: local maxima at least ``threshold`` high, ~``spacing`` px
    apart, one pixel per plateau (training scores its peaks with the same rule)."""
    md = max(1, int(round(spacing)))
    return _one_per_plateau((heat >= ndi.maximum_filter(heat, size=2 * md + 1)) & (heat >= threshold))


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


@dataclass
class CentreMaps:
    """What a learned centre map says about one field: a probability map per cell kind (working
    pixels) and its peak rules."""

    heats: dict[str, np.ndarray]
    thresholds: dict[str, float]
    #: spacing of two red-cell seeds, in units of r
    min_distance: float
    #: the rule that joins a red cell the map cut in two (:mod:`.pairs`; None: none is joined)
    pair_rule: PairJudge | None = None

    def peaks(self, kind: str, spacing: float) -> np.ndarray:
        """The seeds of one kind's map, ~``spacing`` working pixels apart."""
        return centre_peaks(self.heats[kind], self.thresholds.get(kind, 0.5), spacing)

    def red_cell_confidence(self, r: float) -> float:
        """The median probability of the red-cell peaks (0 without any) for a typical radius of
        ``r`` working pixels: how surely the map sees cells at that scale."""
        heat = self.heats["rbc"]
        values = heat[self.peaks("rbc", self.min_distance * r)]
        return float(np.median(values)) if values.size else 0.0


def read_centre_maps(centres: CentreMap | None, od: np.ndarray, cfg: SegmentConfig) -> CentreMaps | None:
    """Run the learned centre map on the working-scale optical density (None without one)."""
    if centres is None:
        return None
    got = centres(od.astype(np.float32))
    heats = {"rbc": got} if isinstance(got, np.ndarray) else dict(got)
    thresholds = dict(getattr(centres, "thresholds", {}) or {})
    return CentreMaps(heats, thresholds, float(getattr(centres, "min_distance", cfg.vote_min_distance)),
                      getattr(centres, "pair_rule", None))


@dataclass
class Seeds:
    """Watershed markers: ids 1..n are the nucleated cells' zones, then one id per seed.

    Attributes:
        markers: int32 marker image.
        count: the highest marker id.
        rbc_ids: marker ids grown from a red-cell seed (circle vote or learned centre).
        platelet_ids: marker ids of learned platelet centres.
        mask: where the watershed floods: the foreground, the nuclei and a disc round each
            red-cell seed (pale interiors, broken rims).
        height: the smoothed distance transform of that mask outside the nucleated zones.
    """

    markers: np.ndarray
    count: int
    rbc_ids: np.ndarray
    platelet_ids: np.ndarray
    mask: np.ndarray
    height: np.ndarray


def place_seeds(fg: np.ndarray, nuclei: Nuclei, maps: CentreMaps | None, r: float,
                cfg: SegmentConfig) -> Seeds:
    """Red-cell seeds (learned centre peaks, or circle votes, which find overlapping and pale
    ring-like cells), distance-transform maxima for the cells no circle explains (elongated,
    irregular; hand-made seeds only), learned platelet centres, small objects behind a neck, and
    one seed at the deepest point of every object still without one. Each nuclear group is one
    seed."""
    rbc = _rbc_peaks(nuclei, maps, r, cfg)
    mask, spot_dist = _with_seed_discs(fg | nuclei.mask, rbc, r, cfg)
    if maps is not None:
        nuclei = _zones_without_red_cells(nuclei, spot_dist, r, cfg)
    dt = ndi.distance_transform_edt(mask & (nuclei.zone_labels == 0))
    height = ndi.gaussian_filter(dt, sigma=max(0.5, cfg.dt_smooth * r))
    peak = _away(_distance_peaks(height, maps is not None, r, cfg), nuclei, spot_dist, cfg.vote_exclusive * r)
    platelets = None
    if maps is not None and "platelet" in maps.heats:
        platelets = _platelet_peaks(maps, mask, nuclei, spot_dist, r)
    if cfg.small_seed_dynamic > 0:
        peak |= _small_object_peaks(height, peak, platelets, nuclei, spot_dist, r, cfg)
    peak |= rbc
    return _numbered(peak, rbc, platelets, mask, height, nuclei)


def _zones_without_red_cells(nuclei: Nuclei, spot_dist: np.ndarray | None, r: float,
                             cfg: SegmentConfig) -> Nuclei:
    """The nucleated zones less the pixels nearer a learned red-cell centre than any nucleus,
    and those within ``zone_release_disc r`` of one (nuclear pixels excepted).

    A zone is every stained pixel within a reach of the nucleus; a red cell pressed against a
    white cell lies half inside it, and as a pre-flooded marker the zone would leave its seed a
    single pixel (the cell lost, or its rims counted with the white cell). The learned map tells
    a red-cell centre from a nucleated one, so where it found one the boundary is drawn halfway;
    a red cell lying over the white cell's cytoplasm, its centre a few pixels from a lobe, kept
    only a sliver that way (read as a platelet or dropped: bcd-256 fields 18 and 51), so it
    keeps the disc round its centre too."""
    if spot_dist is None or nuclei.distance is None:
        return nuclei
    own = (spot_dist < nuclei.distance) | (spot_dist <= cfg.zone_release_disc * r)
    release = (nuclei.zone_labels > 0) & ~nuclei.mask & own
    if not release.any():
        return nuclei
    return replace(nuclei, zone_labels=np.where(release, 0, nuclei.zone_labels).astype(np.int32))


def _away(mask: np.ndarray, nuclei: Nuclei, spot_dist: np.ndarray | None, min_spot_distance: float) -> np.ndarray:
    """``mask`` less the pixels next to a nucleus and those within ``min_spot_distance`` of a
    red-cell seed."""
    if nuclei.near is not None:
        mask &= ~nuclei.near
    if spot_dist is not None:
        mask &= spot_dist > min_spot_distance
    return mask


def _rbc_peaks(nuclei: Nuclei, maps: CentreMaps | None, r: float, cfg: SegmentConfig) -> np.ndarray:
    """One seed per red cell: a learned centre map's peaks, or circle centres voted by the
    outline of the foreground outside the nucleated zones (each outline pixel votes inward at
    distances around r)."""
    if maps is None:
        fg_rbc = nuclei.rbc_foreground
        votes = _circle_votes(fg_rbc, r)
        vmd = max(1, int(round(cfg.vote_min_distance * r)))
        vpk = (votes >= ndi.maximum_filter(votes, size=2 * vmd + 1)) & (votes >= cfg.vote_min) & fg_rbc
    else:
        vpk = maps.peaks("rbc", maps.min_distance * r)
    return _away(vpk, nuclei, None, 0.0)


def _with_seed_discs(fg_all: np.ndarray, rbc: np.ndarray, r: float,
                     cfg: SegmentConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """The mask with a disc of ``vote_fill r`` round each red-cell seed added (pale interiors,
    broken rims), and every pixel's distance to the nearest red-cell seed (None without seeds)."""
    vy, vx = np.nonzero(rbc)
    if not vy.size:
        return fg_all, None
    spots = np.ones(fg_all.shape, dtype=bool)
    spots[vy, vx] = False
    spot_dist = ndi.distance_transform_edt(spots)
    return fg_all | (spot_dist <= cfg.vote_fill * r), spot_dist


def _distance_peaks(height: np.ndarray, learned: bool, r: float, cfg: SegmentConfig) -> np.ndarray:
    """Distance-transform maxima, ``marker_min_distance r`` apart and ``marker_min_height r``
    high; none with a learned centre map (its centres are the red-cell seeds)."""
    if learned:
        return np.zeros(height.shape, dtype=bool)
    md = max(1, int(round(cfg.marker_min_distance * r)))
    return (height >= ndi.maximum_filter(height, size=2 * md + 1)) & (height > cfg.marker_min_height * r)


def _platelet_peaks(maps: CentreMaps, mask: np.ndarray, nuclei: Nuclei, spot_dist: np.ndarray | None,
                    r: float) -> np.ndarray:
    """Platelet centres pressed against a red cell get a seed of their own (not within ~half a
    red cell of a red-cell seed, nor inside a nucleated cell's zone)."""
    ppk = maps.peaks("platelet", PEAK_SPACING["platelet"] * r)
    ppk &= mask & (nuclei.zone_labels == 0)
    return _away(ppk, nuclei, spot_dist, 0.6 * r)


def _small_object_peaks(height: np.ndarray, peak: np.ndarray, platelets: np.ndarray | None, nuclei: Nuclei,
                        spot_dist: np.ndarray | None, r: float, cfg: SegmentConfig) -> np.ndarray:
    """Small objects pressed against a cell (platelets, fragments): a distance peak too low for a
    red-cell seed but separated from the cell by a neck (its dynamic, the drop to the saddle, is
    large); a teardrop's tail or a burr cell's spicule rises into the cell without a saddle and
    gets no seed."""
    hdyn = cfg.small_seed_dynamic * r
    low = (height >= ndi.maximum_filter(height, size=3)) & (height <= cfg.marker_min_height * r)
    low &= (height >= 0.5 * hdyn) & ~peak
    low = _away(low, nuclei, spot_dist, cfg.vote_exclusive * r)
    ly, lx = np.nonzero(low)
    if platelets is not None and platelets.any() and ly.size:
        # a learned platelet centre already seeds that object: one seed per platelet
        qy, qx = np.nonzero(platelets)
        far = np.hypot(ly[:, None] - qy[None], lx[:, None] - qx[None]).min(axis=1) > 0.5 * r
        ly, lx = ly[far], lx[far]
    out = np.zeros(peak.shape, dtype=bool)
    for y, x in zip(ly.tolist(), lx.tolist(), strict=True):
        if _stands_alone(height, y, x, hdyn, int(2 * r) + 2):
            out[y, x] = True
    return out


def _numbered(peak: np.ndarray, rbc: np.ndarray, platelets: np.ndarray | None, mask: np.ndarray,
              height: np.ndarray, nuclei: Nuclei) -> Seeds:
    """Marker ids: the nucleated cells' zones first, then the seed groups, the platelet centres
    not already seeded, and one seed at the deepest point of every object still without one
    (small ones: platelets, fragments)."""
    n_nuc = nuclei.n
    plab, npk = ndi.label(peak, structure=np.ones((3, 3)))
    markers = np.where(plab > 0, plab + n_nuc, nuclei.zone_labels).astype(np.int32)
    nm = n_nuc + npk
    rbc_ids = np.unique(plab[rbc]) + n_nuc
    platelet_ids = np.zeros(0, dtype=np.int64)
    if platelets is not None:
        platelets &= markers == 0
        py, px = np.nonzero(platelets)
        platelet_ids = np.arange(nm + 1, nm + 1 + py.size)
        markers[py, px] = platelet_ids
        nm += py.size
    lab_fg, nfg = ndi.label(mask)
    has = np.zeros(nfg + 1, dtype=bool)
    has[lab_fg[markers > 0]] = True
    missing = np.nonzero(~has[1:])[0] + 1
    if missing.size:
        for yx in ndi.maximum_position(height, lab_fg, index=missing):
            nm += 1
            markers[int(yx[0]), int(yx[1])] = nm
    return Seeds(markers=markers, count=nm, rbc_ids=rbc_ids, platelet_ids=platelet_ids, mask=mask, height=height)
