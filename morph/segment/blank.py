"""Step 0: blank areas (a white label box, an over-exposed corner, padding, the transparent part
of an image composited on white) are neither glass nor cells: they become glass-coloured before
the glass is measured, so they can neither pass for the glass (which would make every real
glass pixel look stained: a "very dense" field with no cells) nor for cells.

A blank area is a large region with no pixel noise at all (neighbouring pixels within one grey
level in every channel), brighter than ``blank_min_grey``, enclosing at most one object (a
padding frame encloses the field; glass encloses its cells), that stands out from what surrounds
it by a step: its mean grey is at least ``blank_step`` levels above most of the pixels just
outside it (their 75th percentile: the glass around it, not the cells pressed against it). Real glass can be as flat where it saturates or JPEG smooths it (many TXL-PBC fields), but
it fades into the glass around it instead of stepping down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .arrays import block_mean, resize_to
from .config import SegmentConfig
from .glass import background_colour


def _flat_bright(rgb: np.ndarray, cfg: SegmentConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels of the large flat bright regions on a coarse grid (every ``s``-th pixel, compared
    with its right and lower neighbours at full resolution), that grid's grey, and ``s``."""
    h, w = rgb.shape[:2]
    s = 4 if min(h, w) >= 128 else 1
    # float copies of the coarse grid only (a uint8 field stays uint8 at full resolution)
    a = rgb[: h - 1: s, : w - 1: s].astype(np.float32)
    right = rgb[: h - 1: s, 1: w: s].astype(np.float32)
    grey = a.mean(axis=2)
    flat = (np.abs(a - right).max(axis=2) <= 1.0) & (grey >= cfg.blank_min_grey)
    min_px = max(256.0, cfg.blank_min_area * h * w) / (s * s)
    # most fields have no flat bright area at all: the lower neighbours only when needed
    if flat.sum() < min_px:
        return np.zeros(flat.shape, np.int32), grey, s
    flat &= np.abs(a - rgb[1: h: s, : w - 1: s].astype(np.float32)).max(axis=2) <= 1.0
    lab, n = ndi.label(flat)
    # one region per grey level (a white patch pressed against flat glass stays apart from it)
    combo = np.where(flat, lab.astype(np.int64) * 128 + np.rint(grey / 4.0).astype(np.int64), 0)
    _, inverse = np.unique(combo, return_inverse=True)
    lab = inverse.reshape(flat.shape)
    n = int(lab.max())
    big = np.bincount(lab.ravel(), minlength=n + 1) >= min_px
    big[0] = False
    ids = np.cumsum(big) * big
    return ids[lab].astype(np.int32), grey, s


def _enclosed(region: np.ndarray, min_size: int = 16) -> int:
    """How many holes of at least ``min_size`` grid points ``region`` encloses (within its box)."""
    holes, n = ndi.label(~region)
    if n == 0:
        return 0
    size = np.bincount(holes.ravel(), minlength=n + 1)
    size[np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]]))] = 0
    size[0] = 0
    return int((size >= min_size).sum())


def _stepped(lab: np.ndarray, grey: np.ndarray, cfg: SegmentConfig) -> np.ndarray:
    """The grey level of each labelled flat region that steps down to its surroundings (0 for
    the others and for index 0)."""
    n = int(lab.max())
    out = np.zeros(n + 1)
    level = np.bincount(lab.ravel(), weights=grey.ravel(), minlength=n + 1) / np.maximum(
        np.bincount(lab.ravel(), minlength=n + 1), 1)
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        box = tuple(slice(max(0, d.start - 1), d.stop + 1) for d in sl)
        inside = lab[box] == i
        if _enclosed(inside) > 1:
            continue  # glass around cells, not a patch (a padding frame encloses one field)
        around = grey[box][ndi.binary_dilation(inside) & ~inside]
        # the brighter part of the surroundings (the glass, not the cells pressed against it)
        if around.size and level[i] - float(np.percentile(around, 75)) >= cfg.blank_step:
            out[i] = level[i]
    return out


def blank_mask(rgb: np.ndarray, cfg: SegmentConfig) -> np.ndarray | None:
    """Full-resolution mask of the blank areas of an (H, W, 3) RGB field, float32 or uint8
    (None: none): the pixels at the blank level itself (painting adds their one-pixel edge)."""
    lab, grey, s = _flat_bright(rgb, cfg)
    if not lab.any():
        return None
    level = _stepped(lab, grey, cfg)
    if not level.any():
        return None
    h, w = rgb.shape[:2]
    # the coarse regions grown by one grid step, then at full resolution the pixels of each
    # region's own grey level (exact edges)
    grown = ndi.grey_dilation(np.where(level[lab] > 0, lab, 0), size=3)
    up = np.repeat(np.repeat(grown, s, axis=0), s, axis=1)[:h, :w]
    full_lab = np.zeros((h, w), np.int32)
    full_lab[: up.shape[0], : up.shape[1]] = up
    near = level[full_lab]
    return (near > 0) & (np.abs(rgb.astype(np.float32, copy=False).mean(axis=2) - near) <= 2.0)


def _local_glass(rgb: np.ndarray, blank: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """The glass colour near every pixel (H, W, 3): the glass pixels outside the blank areas
    (within a few grey levels of the glass ``colour``) spread by normalised convolution on a
    coarse grid, so a painted area continues the vignetting of the glass it borders."""
    grey = rgb.mean(axis=2)
    glass = (~blank & (np.abs(grey - float(colour.mean())) <= 12.0)).astype(np.float32)
    g = max(1, max(rgb.shape[:2]) // 40)
    gl = block_mean(glass, g)
    col = block_mean(rgb * glass[:, :, None], g)
    sigma = max(gl.shape) / 10.0
    wsum = ndi.gaussian_filter(gl, sigma, mode="nearest")
    num = ndi.gaussian_filter(col, (sigma, sigma, 0), mode="nearest")
    coarse = np.where(wsum[:, :, None] > 1e-3, num / np.maximum(wsum, 1e-6)[:, :, None], colour)
    return resize_to(coarse.astype(np.float32), rgb.shape[:2])


def blank_to_glass(rgb: np.ndarray, blank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The field with its ``blank`` areas and their one-pixel edge (JPEG ringing belongs to the
    patch) painted glass (the glass colour of the rest, with the rest's pixel noise, from a fixed
    seed), and the mask painted."""
    blank = ndi.binary_dilation(blank, iterations=1)
    rgb = rgb.astype(np.float32, copy=False)  # painting needs float (a uint8 field is converted only here)
    rest = rgb[~blank]
    if rest.shape[0] < 64:
        return rgb, blank
    glass = _local_glass(rgb, blank, background_colour(rest[:, None, :]))
    dx = np.abs(np.diff(rgb, axis=1))[~blank[:, 1:] & ~blank[:, :-1]]
    noise = 1.4826 * np.median(dx, axis=0) / math.sqrt(2.0) if dx.size else np.zeros(3, np.float32)
    fill = glass[blank] + np.random.default_rng(0).standard_normal((int(blank.sum()), 3)).astype(np.float32) * noise
    out = rgb.copy()
    out[blank] = np.clip(fill, 0.0, 255.0)
    return out, blank


@dataclass
class Part:
    """The part of a field analysed: blank margins cut off, the blank areas left in it painted.

    Attributes:
        rgb: its pixels (the input array itself, or a view of it, when nothing is painted).
        blank: the painted pixels (None: none).
        offset: (y, x) of its top-left corner in the field.
        blank_fraction: the fraction of the whole field that is blank.
    """

    rgb: np.ndarray
    blank: np.ndarray | None = None
    offset: tuple[int, int] = (0, 0)
    blank_fraction: float = 0.0


def field_part(rgb: np.ndarray, cfg: SegmentConfig) -> Part:
    """Step 0: the field without its blank margins (padding, a transparent frame: cells at its
    own edge stay cut by the image border, and a padded field is analysed on exactly its own
    pixels) and with the blank areas inside it painted glass."""
    blank = blank_mask(rgb, cfg)
    if blank is None:
        return Part(rgb)
    ys, xs = trim_margins(blank)
    part, inside = rgb[ys, xs], blank[ys, xs]
    painted, mask = blank_to_glass(part, inside) if inside.any() else (part, None)
    return Part(painted, mask, (ys.start, xs.start), float(blank.mean()))


def trim_margins(blank: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns left once the wholly blank ones at the edges (padding, a transparent
    margin) are cut off, so cells at the field's own edge stay cut by the image border."""
    rows = np.asarray(~blank.all(axis=1), dtype=bool)
    cols = np.asarray(~blank.all(axis=0), dtype=bool)
    if not rows.any():
        return slice(0, blank.shape[0]), slice(0, blank.shape[1])
    r0, r1 = int(np.argmax(rows)), len(rows) - int(np.argmax(rows[::-1]))
    c0, c1 = int(np.argmax(cols)), len(cols) - int(np.argmax(cols[::-1]))
    return slice(r0, r1), slice(c0, c1)


def field_glass(rgb: np.ndarray, cfg: SegmentConfig | None = None) -> np.ndarray:
    """The glass colour of a whole field (3 floats), its blank areas left out: a white label box
    or a transparent corner is brighter than the glass and would otherwise pass for it."""
    rgb = np.asarray(rgb)
    # every k-th pixel of a large field: the same colour, and the pixel noise that tells glass
    # from a blank area is kept (block averages would smooth the glass flat)
    step = max(1, max(rgb.shape[:2]) // 1024)
    rgb = rgb[::step, ::step]
    blank = blank_mask(rgb, cfg or SegmentConfig()) if min(rgb.shape[:2]) >= 64 else None
    if blank is not None:
        rest = rgb[~blank]
        if rest.shape[0] >= 64:
            return background_colour(rest[:, None, :])
    return background_colour(rgb)
