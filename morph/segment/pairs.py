"""Step 6b, cells cut in two: two touching red-cell regions that are one cell are joined.

The centre map sometimes puts two peaks on one cell (the two halves round a pale centre, the
two ends of an oval or of a large cell), and the watershed then cuts the cell along a straight
line between them. Two overlapping or touching cells look alike on many single measures, so
the decision is learnt from real boxes (``python -m training.train_pair_rule``) and kept in
the localizer's folder next to the thresholds tuned with it: either a logistic rule over
measures of the pair (:data:`PAIR_FEATURES`, ``pair_rule.json``, :class:`PairRule`) or a small
network that also looks at the pair (:func:`pair_crops`, ``pair_net.json`` +
``pair_net.pt``, :class:`morph.localize.PairNetJudge`): a cut through a pale centre and the
line where two cells meet differ in the picture more than in any one measure. Both answer the
:class:`PairJudge` questions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from scipy import ndimage as ndi

from .arrays import ellipse_eccentricity

#: What the rule reads of a pair of touching red-cell regions, in this order:
#: ``contact``: shared border length / r; ``small_area``, ``union_area``: the smaller region's
#: and the pair's area / the area of a typical cell (pi r^2); ``union_ecc``: eccentricity of the
#: pair's fitted ellipse; ``saddle``: lowest centre-map value on the line between the two centres
#: / the lower of the two peaks (one cell: a ridge; two cells: a valley); ``distance``: distance
#: of the centres / r; ``contact_od``: stain on the shared border / the pair's mean (overlap:
#: darker; a gap between cells: paler); ``cut``: either region cut by the image edge or a blank
#: area; ``peak``: the lower of the two peaks (a probability); ``middle_od``: stain on the shared
#: border within 0.3 r of the midpoint of the two centres / the pair's mean (the middle of the
#: cut: a pale centre when one cell is cut, the darker lens of two overlapping cells).
PAIR_FEATURES = (
    "contact", "small_area", "union_area", "union_ecc", "saddle", "distance", "contact_od", "cut", "peak",
    "middle_od",
)


#: The picture of a pair a pair network reads (:func:`pair_crops`): rows x columns, the
#: length it spans along the line through the two centres (in typical radii; across it the
#: pixels are as wide), and what each channel holds.
CROP_SHAPE = (24, 32)
CROP_SPAN = 4.8
CROP_CHANNELS = ("stain", "first", "second", "other_cells", "centre_map")


#: The pictures of some pairs (:func:`pair_crops`), given their indices: a judge asks only for
#: the pictures it reads.
PairPictures = Callable[[np.ndarray], np.ndarray]


class PairJudge(Protocol):
    """What decides whether two touching red-cell regions are one cell cut in two."""

    @property
    def threshold(self) -> float:
        """Join a pair when its probability reaches this."""
        ...

    @property
    def reads_crops(self) -> bool:
        """Whether :meth:`probability` reads pictures of the pairs (:func:`pair_crops`)."""
        ...

    def probability(self, features: np.ndarray, pictures: PairPictures | None = None) -> np.ndarray:
        """Per pair: the probability that it is one cell (``features``: :data:`PAIR_FEATURES`;
        ``pictures``: the pictures of the pairs it asks for)."""
        ...


@dataclass
class SharedBorders:
    """The touching pairs of regions and the 4-neighbour pixel pairs across each shared border.

    Attributes:
        pairs: ``(n, 2)`` region ids, lower first.
        of_pair: for every pixel pair across a border, the index of its pair.
        ya, xa, yb, xb: the two pixels of each pixel pair.
    """

    pairs: np.ndarray
    of_pair: np.ndarray
    ya: np.ndarray
    xa: np.ndarray
    yb: np.ndarray
    xb: np.ndarray

    @property
    def contact(self) -> np.ndarray:
        """Length of each pair's shared border (pixel pairs)."""
        return np.bincount(self.of_pair, minlength=len(self.pairs))

    def mean(self, image: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per pair: the mean of ``image`` over its pixel pairs (``weights``: which count) and
        how many counted."""
        values = (image[self.ya, self.xa] + image[self.yb, self.xb]) / 2
        w = np.ones(len(self.of_pair)) if weights is None else weights.astype(np.float64)
        n = np.bincount(self.of_pair, weights=w, minlength=len(self.pairs))
        total = np.bincount(self.of_pair, weights=w * values, minlength=len(self.pairs))
        return total / np.maximum(n, 1e-9), n


def shared_borders(labels: np.ndarray, eligible: np.ndarray) -> SharedBorders:
    """Every pair of touching regions that are both ``eligible`` (a boolean per label), with the
    pixel pairs across their shared border."""
    w = labels.shape[1]
    right = (labels[:, :-1].ravel(), labels[:, 1:].ravel())
    down = (labels[:-1, :].ravel(), labels[1:, :].ravel())
    kr = np.flatnonzero((right[0] != right[1]) & eligible[right[0]] & eligible[right[1]])
    kd = np.flatnonzero((down[0] != down[1]) & eligible[down[0]] & eligible[down[1]])
    a = np.concatenate([right[0][kr], down[0][kd]]).astype(np.int64)
    b = np.concatenate([right[1][kr], down[1][kd]]).astype(np.int64)
    ry, rx = kr // max(w - 1, 1), kr % max(w - 1, 1)
    dy, dx = kd // w, kd % w
    n = int(labels.max()) + 1
    ids, of_pair = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_inverse=True)
    return SharedBorders(np.stack([ids // n, ids % n], axis=1).reshape(-1, 2), of_pair.ravel(),
                         np.concatenate([ry, dy]), np.concatenate([rx, dx]),
                         np.concatenate([ry, dy + 1]), np.concatenate([rx + 1, dx]))


def _union_eccentricity(stats: dict[str, np.ndarray], i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Eccentricity of the ellipse fitted to regions ``i`` and ``j`` taken together, from their
    areas, centroids and central second moments (:func:`.regions.region_stats`)."""
    ni, nj = stats["n"][i], stats["n"][j]
    n = ni + nj

    def together(m: str, p: str, q: str) -> np.ndarray:  # the pair's central moment m (= E[pq] - E[p]E[q])
        mean_p = (ni * stats[p][i] + nj * stats[p][j]) / n
        mean_q = (ni * stats[q][i] + nj * stats[q][j]) / n
        raw = (ni * (stats[m][i] + stats[p][i] * stats[q][i]) + nj * (stats[m][j] + stats[p][j] * stats[q][j])) / n
        return raw - mean_p * mean_q

    return ellipse_eccentricity(together("mxx", "cx", "cx"), together("myy", "cy", "cy"), together("mxy", "cx", "cy"))


def _line_min(heat: np.ndarray, p: np.ndarray, q: np.ndarray, n: int = 17) -> np.ndarray:
    """Per row of ``p`` and ``q`` ((m, 2) y, x): the lowest value of ``heat`` at ``n`` points
    evenly spaced from one to the other."""
    t = np.linspace(0.0, 1.0, n)[None, :]
    ys = np.clip(np.rint(p[:, :1] + t * (q[:, :1] - p[:, :1])).astype(np.intp), 0, heat.shape[0] - 1)
    xs = np.clip(np.rint(p[:, 1:] + t * (q[:, 1:] - p[:, 1:])).astype(np.intp), 0, heat.shape[1] - 1)
    return heat[ys, xs].min(axis=1)


def pair_features(labels: np.ndarray, stats: dict[str, np.ndarray], eligible: np.ndarray, heat: np.ndarray,
                  stain: np.ndarray, centres: np.ndarray, cut: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(n, 2)`` of touching ``eligible`` regions and its :data:`PAIR_FEATURES`
    ``(n, len(PAIR_FEATURES))``, all pairs at once.

    Args:
        labels: the regions (working scale); ``stats``: their :func:`.regions.region_stats`;
            ``eligible``: a boolean per label.
        heat: the red-cell centre map; ``stain``: the summed optical density (both working scale).
        centres: ``(labels.max() + 1, 2)`` (y, x) of each region's centre (its learned centre,
            else its centroid).
        cut: per label, whether the region is cut by the image edge or a blank area.
        r: the typical red-cell radius (working pixels).
    """
    borders = shared_borders(labels, eligible)
    if not len(borders.pairs):
        return borders.pairs, np.zeros((0, len(PAIR_FEATURES)))
    i, j = borders.pairs[:, 0], borders.pairs[:, 1]
    area = stats["n"]
    stain_sum = np.bincount(labels.ravel(), weights=stain.ravel(), minlength=len(area))
    cell_area = math.pi * r * r
    union = area[i] + area[j]
    mean_stain = np.maximum((stain_sum[i] + stain_sum[j]) / union, 1e-6)
    ci, cj = centres[i], centres[j]
    rounded = np.rint(centres).astype(np.intp)
    peak_of = heat[np.clip(rounded[:, 0], 0, heat.shape[0] - 1), np.clip(rounded[:, 1], 0, heat.shape[1] - 1)]
    peak = np.minimum(peak_of[i], peak_of[j])
    # the middle of the cut: border pixel pairs near the midpoint of the two centres
    mid = (ci + cj)[borders.of_pair] / 2
    near = np.hypot((borders.ya + borders.yb) / 2 - mid[:, 0], (borders.xa + borders.xb) / 2 - mid[:, 1]) \
        <= max(0.3 * r, 1.5)
    border_stain, _ = borders.mean(stain)
    middle, n_middle = borders.mean(stain, near)
    middle = np.where(n_middle > 0, middle, border_stain)
    return borders.pairs, np.stack([
        borders.contact / r,
        np.minimum(area[i], area[j]) / cell_area,
        union / cell_area,
        _union_eccentricity(stats, i, j),
        _line_min(heat, ci, cj) / np.maximum(peak, 1e-3),
        np.hypot(ci[:, 0] - cj[:, 0], ci[:, 1] - cj[:, 1]) / r,
        border_stain / mean_stain,
        (cut[i] | cut[j]).astype(np.float64),
        peak,
        middle / mean_stain,
    ], axis=1)


@dataclass(frozen=True)
class PairRule:
    """Logistic rule: join a pair when ``sigmoid(coef . (x - mean) / scale + bias) >= threshold``."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    bias: float
    threshold: float
    features: tuple[str, ...] = PAIR_FEATURES
    reads_crops: ClassVar[bool] = False

    def probability(self, x: np.ndarray, pictures: PairPictures | None = None) -> np.ndarray:
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


def region_centres(regions: Any, learned: dict[int, tuple[float, float]]) -> np.ndarray:
    """``(count + 1, 2)`` (y, x) of each region's centre: the learned centre that seeded it,
    else its centroid."""
    out = np.stack([regions.stats["cy"], regions.stats["cx"]], axis=1).astype(np.float64)
    for i, c in learned.items():
        out[i] = c
    return out


def red_cell_pairs(regions: Any, kinds: dict[int, str], heat: np.ndarray, stain: np.ndarray,
                   centres: np.ndarray, cut: np.ndarray, r: float) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of touching red-cell regions ``(n, 2)`` and its :data:`PAIR_FEATURES`
    (``centres``: :func:`region_centres`)."""
    eligible = np.zeros(regions.count + 1, dtype=bool)
    eligible[[i for i, kind in kinds.items() if kind == "rbc"]] = True
    return pair_features(regions.labels, regions.stats, eligible, heat, stain, centres, cut, r)


def pair_crops(stain: np.ndarray, labels: np.ndarray, pairs: np.ndarray, centres: np.ndarray, heat: np.ndarray,
               r: float) -> np.ndarray:
    """The picture of each pair, ``(n, len(CROP_CHANNELS), *CROP_SHAPE)`` float32: the field
    resampled along the line from the first region's centre (left) to the second's (right),
    :data:`CROP_SPAN` typical radii long whatever the cell size.

    Channels (:data:`CROP_CHANNELS`): the summed optical density over the pair's mean (so a
    pale or a dark stain, and a violet or a pink one, read alike: the colours' balance changes
    from lab to lab, the shape of the stain does not), the two regions' masks, the other cells'
    and the red-cell centre map.

    Args:
        stain: ``(h, w)`` summed optical density; ``labels``: the regions; ``heat``: the centre
            map (all working scale). ``pairs``: ``(n, 2)`` region ids; ``centres``: ``(y, x)`` per
            label (:func:`region_centres`); ``r``: the typical radius (working pixels).
    """
    rows, cols = CROP_SHAPE
    n = len(pairs)
    if not n:
        return np.zeros((0, len(CROP_CHANNELS), rows, cols), dtype=np.float32)
    first, second = centres[pairs[:, 0]], centres[pairs[:, 1]]
    mid = (first + second) / 2
    along = second - first
    along = along / np.maximum(np.hypot(along[:, 0], along[:, 1]), 1e-6)[:, None]
    across = np.stack([-along[:, 1], along[:, 0]], axis=1)
    step = CROP_SPAN * r / cols
    a = (np.arange(cols) - (cols - 1) / 2) * step
    b = (np.arange(rows) - (rows - 1) / 2) * step
    grid = [mid[:, d, None, None] + a[None, None, :] * along[:, d, None, None] + b[None, :, None] * across[:, d, None, None]
            for d in (0, 1)]
    at = np.stack([grid[0].ravel(), grid[1].ravel()])

    def sample(image: np.ndarray, order: int) -> np.ndarray:
        return ndi.map_coordinates(image, at, order=order, mode="constant", cval=0).reshape(n, rows, cols)

    region = sample(labels, 0)
    mine = region == pairs[:, 0, None, None], region == pairs[:, 1, None, None]
    others = (region > 0) & ~mine[0] & ~mine[1]
    seen = sample(np.ascontiguousarray(stain, dtype=np.float32), 1)
    union = mine[0] | mine[1]
    pair_mean = (seen * union).sum(axis=(1, 2)) / np.maximum(union.sum(axis=(1, 2)), 1)
    seen = seen / np.maximum(pair_mean, 1e-3)[:, None, None]
    return np.stack([seen, *mine, others, sample(heat.astype(np.float32), 1)], axis=1).astype(np.float32)


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
