"""Step 6b, cells cut in two: two touching red-cell regions that are one cell are joined.

The centre map sometimes puts two peaks on one cell (the two halves round a pale centre, the
two ends of an oval or of a large cell), and the watershed then cuts the cell along a straight
line between them. Two overlapping or touching cells look alike on many single measures, so
the decision is a small logistic rule over measures of the pair (:data:`PAIR_FEATURES`),
learnt from real boxes (``python -m training.train_pair_rule``) and kept in the localizer's
folder (``pair_rule.json``) next to the thresholds tuned with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .arrays import hull_area

#: What the rule reads of a pair of touching red-cell regions, in this order:
#: ``contact``: shared border length / r; ``small_area``, ``union_area``: the smaller region's
#: and the pair's area / the area of a typical cell (pi r^2); ``union_solidity``: area / convex
#: hull area of the pair; ``union_ecc``: eccentricity of the pair's fitted ellipse;
#: ``saddle``: lowest centre-map value on the line between the two centres / the lower of the
#: two peaks (one cell: a ridge; two cells: a valley); ``distance``: distance of the centres / r;
#: ``contact_od``: stain on the shared border / the pair's median (overlap: darker; a gap
#: between cells: paler); ``cut``: either region cut by the image edge or a blank area;
#: ``peak``: the lower of the two peaks (a probability); ``middle_od``: stain on the shared
#: border within 0.3 r of the midpoint of the two centres / the pair's median (the middle of
#: the cut: a pale centre when one cell is cut, the darker lens of two overlapping cells).
PAIR_FEATURES = (
    "contact", "small_area", "union_area", "union_solidity", "union_ecc", "saddle", "distance", "contact_od", "cut",
    "peak", "middle_od",
)


def touching_pairs(labels: np.ndarray, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(n, 2)`` (lower id first) of touching regions that are both ``eligible`` (a
    boolean per label), and the length of the border each pair shares (pixel pairs)."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    sel = (a != b) & eligible[a] & eligible[b]
    if not sel.any():
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    n = int(labels.max()) + 1
    lo, hi = np.minimum(a[sel], b[sel]).astype(np.int64), np.maximum(a[sel], b[sel]).astype(np.int64)
    ids, contact = np.unique(lo * n + hi, return_counts=True)
    return np.stack([ids // n, ids % n], axis=1), contact


def _ellipse_eccentricity(ys: np.ndarray, xs: np.ndarray) -> float:
    cov = np.cov(np.stack([ys, xs]).astype(np.float64)) if ys.size > 2 else np.zeros((2, 2))
    lo, hi = np.linalg.eigvalsh(cov)
    return float(math.sqrt(max(0.0, 1.0 - max(lo, 0.0) / hi))) if hi > 0 else 0.0


def _line_min(heat: np.ndarray, p: tuple[float, float], q: tuple[float, float], n: int = 17) -> float:
    """Lowest value of ``heat`` at ``n`` points evenly spaced from ``p`` to ``q`` (y, x)."""
    t = np.linspace(0.0, 1.0, n)
    ys = np.clip(np.rint(p[0] + t * (q[0] - p[0])).astype(np.intp), 0, heat.shape[0] - 1)
    xs = np.clip(np.rint(p[1] + t * (q[1] - p[1])).astype(np.intp), 0, heat.shape[1] - 1)
    return float(heat[ys, xs].min())


def _box(si: tuple[slice, ...], sj: tuple[slice, ...], shape: tuple[int, int]) -> tuple[slice, slice]:
    """Both regions' boxes together, grown by one pixel (their shared border lies inside)."""
    return (slice(max(0, min(si[0].start, sj[0].start) - 1), min(shape[0], max(si[0].stop, sj[0].stop) + 1)),
            slice(max(0, min(si[1].start, sj[1].start) - 1), min(shape[1], max(si[1].stop, sj[1].stop) + 1)))


def pair_features(labels: np.ndarray, boxes: list[tuple[slice, ...] | None], pairs: np.ndarray,
                  contact: np.ndarray, heat: np.ndarray, stain: np.ndarray,
                  centres: dict[int, tuple[float, float]], cut: np.ndarray, r: float) -> np.ndarray:
    """The :data:`PAIR_FEATURES` of each pair, ``(n, len(PAIR_FEATURES))`` float64.

    Args:
        labels: the regions (working scale); ``boxes`` their ``find_objects`` boxes.
        pairs, contact: from :func:`touching_pairs`.
        heat: the red-cell centre map; ``stain``: the summed optical density (both working scale).
        centres: (y, x) of each region's centre (its learned centre, else its centroid).
        cut: per label, whether the region is cut by the image edge or a blank area.
        r: the typical red-cell radius (working pixels).
    """
    cell_area = math.pi * r * r
    out = np.zeros((len(pairs), len(PAIR_FEATURES)), dtype=np.float64)
    for row, ((i, j), touch) in enumerate(zip(pairs.tolist(), contact.tolist(), strict=True)):
        si, sj = boxes[i - 1], boxes[j - 1]
        if si is None or sj is None:
            continue
        box = _box(si, sj, labels.shape)
        sub = labels[box]
        in_i, in_j = sub == i, sub == j
        both = in_i | in_j
        ys, xs = np.nonzero(both)
        # the shared border: pixels of one region with a 4-neighbour in the other
        near_j, near_i = ndi.binary_dilation(in_j), ndi.binary_dilation(in_i)
        border = (in_i & near_j) | (in_j & near_i)
        s = stain[box]
        pi, pj = centres[i], centres[j]
        peak = min(heat[int(round(pi[0])), int(round(pi[1]))], heat[int(round(pj[0])), int(round(pj[1]))])
        by, bx = np.nonzero(border)
        mid_y, mid_x = (pi[0] + pj[0]) / 2 - box[0].start, (pi[1] + pj[1]) / 2 - box[1].start
        near = np.hypot(by - mid_y, bx - mid_x) <= max(0.3 * r, 1.5)
        middle = float(s[by[near], bx[near]].mean()) if near.any() else float(s[border].mean())
        median = max(float(np.median(s[both])), 1e-6)
        out[row] = (
            touch / r,
            min(in_i.sum(), in_j.sum()) / cell_area,
            ys.size / cell_area,
            ys.size / hull_area(ys, xs),
            _ellipse_eccentricity(ys, xs),
            _line_min(heat, pi, pj) / max(float(peak), 1e-3),
            math.hypot(pi[0] - pj[0], pi[1] - pj[1]) / r,
            float(s[border].mean()) / median,
            float(cut[i] or cut[j]),
            float(peak),
            middle / median,
        )
    return out


@dataclass(frozen=True)
class PairRule:
    """Logistic rule: join a pair when ``sigmoid(coef . (x - mean) / scale + bias) >= threshold``."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    bias: float
    threshold: float
    features: tuple[str, ...] = PAIR_FEATURES

    def probability(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.bias)))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "mean": list(self.mean), "scale": list(self.scale),
                "coef": list(self.coef), "bias": self.bias, "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairRule:
        feats = tuple(str(f) for f in d["features"])
        if feats != PAIR_FEATURES:
            raise ValueError(f"features must be {list(PAIR_FEATURES)}, got {list(feats)}")
        vecs = {k: tuple(float(v) for v in d[k]) for k in ("mean", "scale", "coef")}
        if any(len(v) != len(feats) for v in vecs.values()):
            raise ValueError("mean, scale and coef need one number per feature")
        return cls(vecs["mean"], vecs["scale"], vecs["coef"], float(d["bias"]), float(d["threshold"]), feats)


def region_centres(regions: Any, learned: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    """(y, x) of each region's centre: the learned centre that seeded it, else its centroid."""
    stats = regions.stats
    out = {i: (float(stats["cy"][i]), float(stats["cx"][i])) for i in range(1, regions.count + 1)}
    out.update(learned)
    return out


def red_cell_pairs(regions: Any, kinds: dict[int, str], heat: np.ndarray, stain: np.ndarray,
                   learned: dict[int, tuple[float, float]], cut: np.ndarray,
                   r: float) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of touching red-cell regions ``(n, 2)`` and its :data:`PAIR_FEATURES`."""
    eligible = np.zeros(regions.count + 1, dtype=bool)
    eligible[[i for i, kind in kinds.items() if kind == "rbc"]] = True
    pairs, contact = touching_pairs(regions.labels, eligible)
    feats = pair_features(regions.labels, regions.boxes, pairs, contact, heat, stain,
                          region_centres(regions, learned), cut, r)
    return pairs, feats


def pairs_to_join(pairs: np.ndarray, probability: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """The pairs to join, most probable first; a region joins once (a cell cut in two, not a
    chain of touching cells walked one by one)."""
    taken: set[int] = set()
    out: list[tuple[int, int]] = []
    for k in np.argsort(-probability, kind="stable").tolist():
        i, j = (int(v) for v in pairs[k])
        if probability[k] < threshold or i in taken or j in taken:
            continue
        taken |= {i, j}
        out.append((i, j))
    return out
