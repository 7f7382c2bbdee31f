"""Array helpers shared by the localization steps: any image to RGB float, block averaging,
resizing a coarse map, per-label maxima, ellipse eccentricity."""

from __future__ import annotations

import math

import numpy as np


def as_rgb_float(image: np.ndarray) -> np.ndarray | None:
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
    if c in (2, 4):
        # colour + alpha: composited on white, as image files are read (a transparent part is
        # blank, not black)
        alpha = np.clip(a[:, :, -1:] / 255.0, 0.0, 1.0)
        a = a[:, :, :-1] * alpha + 255.0 * (1.0 - alpha)
        c -= 1
    if c == 1:
        a = np.repeat(a, 3, axis=2)
    elif c > 3:
        a = a[:, :, :3]
    if np.asarray(image).dtype in (np.uint8, np.uint16, np.bool_):
        return a  # already within 0..255
    return np.clip(a, 0.0, 255.0)


def block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Downsample by an integer factor with block averaging (edge-padded).

    Only the partial blocks at the bottom and right edges are padded (a strip under ``k``
    pixels wide), never a copy of the whole image: on a 49-megapixel field a padded float
    copy was 588 MB. The sums are added in the same order, so the result is the same.
    """
    if k <= 1:
        return a
    h, w = a.shape[:2]
    hb, wb = h - h % k, w - w % k  # the part made of whole blocks
    if hb == h and wb == w:
        return _whole_block_mean(a, k)
    out = np.empty((-(-h // k), -(-w // k)) + a.shape[2:], dtype=np.float32)
    out[: hb // k, : wb // k] = _whole_block_mean(a[:hb, :wb], k)
    rest = [(0, 0)] * (a.ndim - 2)
    if hb < h:  # the bottom strip, corner included
        out[hb // k:] = _whole_block_mean(np.pad(a[hb:], [(0, (-h) % k), (0, (-w) % k), *rest], mode="edge"), k)
    if wb < w:  # the right strip above it
        out[: hb // k, wb // k:] = _whole_block_mean(np.pad(a[:hb, wb:], [(0, 0), (0, (-w) % k), *rest],
                                                            mode="edge"), k)
    return out


def area_mean(a: np.ndarray, k: float) -> np.ndarray:
    """Downsample an (H, W, ...) array by a factor ``k`` > 1 that need not be whole, as float32:
    output pixel ``i`` is the mean of the input over ``[i k, (i + 1) k)`` (pixels its edges cut
    count by the part inside; the last row and column average what is left of the image). A
    whole ``k`` is :func:`block_mean`'s job. Made a band of rows at a time: a 49-megapixel
    field at once took 2.1 GB."""
    h, w = a.shape[:2]
    n_rows, n_cols = math.ceil(h / k - 1e-9), math.ceil(w / k - 1e-9)
    out = np.empty((n_rows, n_cols) + a.shape[2:], dtype=np.float32)
    band = max(1, int((1 << 21) // max(a[0].size * k, 1)))  # output rows per band: ~2M input values
    for i0 in range(0, n_rows, band):
        i1 = min(i0 + band, n_rows)
        y0, y1 = int(math.floor(i0 * k)), min(int(math.ceil(i1 * k)), h)
        rows = _means_along_first_axis(a[y0:y1], k, i0, i1, h, y0)
        out[i0:i1] = np.swapaxes(_means_along_first_axis(np.swapaxes(rows, 0, 1), k, 0, n_cols, w, 0), 0, 1)
    return out


def _means_along_first_axis(a: np.ndarray, k: float, i0: int, i1: int, n: int, origin: int) -> np.ndarray:
    """Output rows ``i0..i1`` of :func:`area_mean` along the first axis, from the input rows
    ``a`` that start at row ``origin`` of an axis ``n`` long."""
    edges = np.minimum(np.arange(i0, i1 + 1) * k, n) - origin
    # the running sum at each fractional edge, interpolated between whole rows (exact for
    # pixels constant over their area)
    total = np.concatenate([np.zeros((1,) + a.shape[1:]), np.cumsum(a, axis=0, dtype=np.float64)])
    lo = np.floor(edges).astype(np.int64)
    shape = (-1,) + (1,) * (a.ndim - 1)
    frac = (edges - lo).reshape(shape)
    at_edges = total[lo] * (1 - frac) + total[np.minimum(lo + 1, len(a))] * frac
    return (np.diff(at_edges, axis=0) / np.diff(edges).reshape(shape)).astype(np.float32)


def _whole_block_mean(a: np.ndarray, k: int) -> np.ndarray:
    acc = np.zeros((a.shape[0] // k, a.shape[1] // k) + a.shape[2:], dtype=np.float32)
    for i in range(k):
        for j in range(k):
            acc += a[i::k, j::k]
    acc *= 1.0 / (k * k)
    return acc


def resize_to(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a small, smooth (h, w, c) map to ``shape`` (pixel centres aligned)."""

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1.0)
        i0 = np.floor(pos).astype(np.intp)
        return i0, np.minimum(i0 + 1, n_in - 1), (pos - i0).astype(np.float32)

    def blend(lo: np.ndarray, hi: np.ndarray, w_lo: np.ndarray, w_hi: np.ndarray) -> np.ndarray:
        # lo * w_lo + hi * w_hi, in place: two output-sized arrays at a time instead of five
        lo *= w_lo
        hi *= w_hi
        lo += hi
        return lo

    a = a.astype(np.float32)
    x0, x1, fx = axis(shape[1], a.shape[1])
    tmp = blend(a[:, x0], a[:, x1], (1.0 - fx)[None, :, None], fx[None, :, None])
    y0, y1, fy = axis(shape[0], a.shape[0])
    return blend(tmp[y0], tmp[y1], (1.0 - fy)[:, None, None], fy[:, None, None])


def label_max(values: np.ndarray, lab: np.ndarray, n: int) -> np.ndarray:
    """Per-label maximum of non-negative ``values`` for labels 0..n (0 where a label is empty);
    ``ndi.maximum`` gives the same but sorts the whole image."""
    out = np.zeros(n + 1, dtype=np.float64)
    np.maximum.at(out, lab.ravel(), values.ravel())
    return out


def ellipse_eccentricity(mxx: np.ndarray, myy: np.ndarray, mxy: np.ndarray) -> np.ndarray:
    """Eccentricity of the ellipse fitted to regions with these central second moments
    (per region): the eigenvalues of the covariance matrix give its axes."""
    tr, det = mxx + myy, mxx * myy - mxy * mxy
    disc = np.sqrt(np.maximum(tr * tr / 4.0 - det, 0.0))
    l1, l2 = tr / 2.0 + disc, np.maximum(tr / 2.0 - disc, 0.0)
    return np.where(l1 > 0, np.sqrt(np.clip(1.0 - l2 / np.maximum(l1, 1e-12), 0.0, 1.0)), 0.0)
