"""Overlay pictures: each cell's outline coloured by label, with a legend."""

from __future__ import annotations

import colorsys
import hashlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.segmentation import find_boundaries

from .labels import ALL_LABELS, PLATELET, UNCLASSIFIED, UNIDENTIFIED
from .types import FieldResult

_FIXED: dict[str, tuple[int, int, int]] = {
    "normal": (40, 200, 60),
    "teardrop": (255, 0, 0),
    "reticulocyte": (0, 120, 255),
    "macrocyte": (255, 140, 0),
    "ovalocyte": (255, 200, 0),
    "hypersegmented_neutrophil": (255, 0, 255),
    "megaloblast": (160, 0, 255),
    "nucleated_rbc": (0, 220, 220),
    UNIDENTIFIED: (20, 20, 20),
    UNCLASSIFIED: (255, 255, 0),
    PLATELET: (90, 90, 90),
}


def label_color(label: str) -> tuple[int, int, int]:
    """A stable, distinct colour per label."""
    if label in _FIXED:
        return _FIXED[label]
    idx = ALL_LABELS.index(label) if label in ALL_LABELS else int(hashlib.md5(label.encode()).hexdigest(), 16)
    r, g, b = colorsys.hsv_to_rgb((idx * 0.61803) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def render_overlay(image: np.ndarray, result: FieldResult, legend: bool = True) -> np.ndarray:
    """Return an RGB picture of ``image`` with every cell outlined in its label colour.

    Cells cut by the border get a thin light-grey outline since they are not
    counted; "unidentified" cells (under the model's threshold) a near-black one. A legend lists the labels present with their counts.
    """
    out = np.asarray(image, dtype=np.uint8).copy()
    h, w = out.shape[:2]
    for c in result.cells:
        x0, y0, x1, y1 = c.bbox
        color = np.array((160, 160, 160) if c.touches_border else label_color(c.label), dtype=np.uint8)
        if c.mask is not None and c.mask.shape == (y1 - y0, x1 - x0):
            edge = find_boundaries(np.pad(c.mask, 1), mode="inner")[1:-1, 1:-1]
            if not c.touches_border:  # thicken the outline of counted cells
                edge |= find_boundaries(np.pad(edge, 1), mode="outer")[1:-1, 1:-1] & c.mask
            out[y0:y1, x0:x1][edge] = color
        else:
            x1c, y1c = min(x1, w) - 1, min(y1, h) - 1
            out[y0, x0:x1c + 1] = color
            out[y1c, x0:x1c + 1] = color
            out[y0:y1c + 1, x0] = color
            out[y0:y1c + 1, x1c] = color
    if not legend:
        return out
    counts: dict[str, int] = {}
    for c in result.cells:
        if not c.touches_border:
            counts[c.label] = counts.get(c.label, 0) + 1
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    font = ImageFont.load_default()
    row = 14
    panel_w = 190
    panel_h = max(row * (len(items) + 1) + 8, 40)
    canvas = Image.new("RGB", (w + panel_w, max(h, panel_h)), (255, 255, 255))
    canvas.paste(Image.fromarray(out), (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((w + 6, 4), f"cells: {sum(counts.values())}", fill=(0, 0, 0), font=font)
    for i, (lab, n) in enumerate(items):
        y = 4 + row * (i + 1)
        draw.rectangle((w + 6, y + 2, w + 16, y + 12), fill=label_color(lab))
        draw.text((w + 22, y), f"{lab} ({n})", fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
