"""Synthetic smear renderer: labelled fields and single-cell crops with ground truth.

Renders Wright-stained peripheral blood, new-methylene-blue (NMB) reticulocyte
preparations and bone-marrow fields at a stated physical scale (micrometres per
pixel), for classes that no public data set here covers and for tests.

How it renders (Beer-Lambert): every cell adds optical density (OD, per RGB channel)
to an OD canvas; the picture is ``illumination * exp(-OD)``, then optical blur and
sensor noise (optionally a JPEG round trip). Each stain component (haemoglobin,
polychromasia, nuclear chromatin, cytoplasm, granules, reticulum, platelet) has an OD
colour vector per stain, so overlapping cells darken where they overlap, as on a real
slide. Colours and optical densities were matched to the Chula RBC-12 fields (blue-grey
to green-grey glass, mauve-pink cells) and TXL-PBC (cream glass); a :class:`RenderStyle`
drawn from the seed varies stain strength and hue, illumination (vignetting, gradient,
mottle), focus, noise, density and debris, so a model does not learn one look.

Sizes are physical: a normal red cell is ``RenderStyle.rbc_diameter_um`` (7.5 um) across at
the given ``um_per_px`` (default: the Chula scale, ``morph.segment.DEFAULT_UM_PER_PX``).
Debris specks are drawn without ground truth (a localizer should ignore them).

Ground truth: each :class:`SynthCell` keeps its **full (amodal) mask**, even where
another cell lies on top of it; masks of overlapping cells therefore overlap. The
order of ``SynthField.cells`` is the drawing (z) order, later on top;
:meth:`SynthField.instance_map` gives the "topmost cell owns the pixel" labelling.
Centres always lie inside the image and inside the cell's own mask; cells cut by the
image edge are kept with ``touches_border=True`` and their mask/bbox clipped.

Everything is seeded: the same seed and arguments give the same image, bit for bit.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from .context import STAINS
from .errors import MorphError
from .labels import kind_of
from .segment import DEFAULT_UM_PER_PX
from .shifts import encode_decode_jpeg

log = logging.getLogger(__name__)

__all__ = [
    "CASE_PRESETS",
    "FIELD_TYPES",
    "RENDER_VARIANTS",
    "RING_FIELD_WEIGHTS",
    "SPARSE_CELLS",
    "CasePreset",
    "STAINS",
    "SYNTH_LABELS",
    "RenderStyle",
    "SynthCell",
    "SynthField",
    "default_label_weights",
    "OOD_OBJECTS",
    "render_cell_crop",
    "render_case",
    "render_ood_crop",
    "render_field",
    "render_ring_field",
]

FIELD_TYPES: tuple[str, ...] = ("blood", "nmb", "marrow")
FIELD_STAIN: dict[str, str] = {"blood": "wright", "nmb": "nmb", "marrow": "wright"}

#: field type -> labels the renderer can draw there ("platelet" is the platelet kind).
SYNTH_LABELS: dict[str, tuple[str, ...]] = {
    "blood": (
        "normal", "macrocyte", "microcyte", "spherocyte", "target_cell", "stomatocyte",
        "ovalocyte", "teardrop", "burr_cell", "schistocyte", "hypochromic", "elliptocyte",
        "reticulocyte", "sickle_cell",
        "nucleated_rbc", "neutrophil", "hypersegmented_neutrophil", "lymphocyte", "monocyte",
        "platelet",
    ),
    "nmb": ("normal", "reticulocyte", "microcyte", "macrocyte", "spherocyte",
            "nucleated_rbc", "neutrophil", "lymphocyte", "platelet"),
    "marrow": ("normal", "macrocyte", "ovalocyte", "teardrop",
               "normoblast", "megaloblast", "neutrophil", "hypersegmented_neutrophil",
               "lymphocyte", "other_wbc", "platelet"),
}

_DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "blood": {
        "normal": 0.50, "macrocyte": 0.04, "microcyte": 0.04, "spherocyte": 0.04,
        "target_cell": 0.04, "stomatocyte": 0.03, "ovalocyte": 0.04, "teardrop": 0.03,
        "burr_cell": 0.03, "schistocyte": 0.03, "hypochromic": 0.04, "elliptocyte": 0.03,
        "reticulocyte": 0.03, "sickle_cell": 0.01,
        "nucleated_rbc": 0.006, "neutrophil": 0.012, "hypersegmented_neutrophil": 0.004,
        "lymphocyte": 0.008, "monocyte": 0.004, "platelet": 0.06,
    },
    "nmb": {
        "normal": 0.70, "reticulocyte": 0.18, "microcyte": 0.02, "macrocyte": 0.02,
        "spherocyte": 0.01, "nucleated_rbc": 0.004, "neutrophil": 0.006, "lymphocyte": 0.004,
        "platelet": 0.05,
    },
    "marrow": {
        "normal": 0.35, "macrocyte": 0.06, "ovalocyte": 0.05, "teardrop": 0.01,
        "normoblast": 0.15, "megaloblast": 0.12, "neutrophil": 0.05,
        "hypersegmented_neutrophil": 0.01, "lymphocyte": 0.04, "other_wbc": 0.08,
        "platelet": 0.04,
    },
}

#: Shapes the renderer can draw that have no label of their own: drawn as themselves, labelled
#: (ground truth) as the vocabulary label they belong to. Pencil cells are long thin
#: elliptocytes of iron deficiency (ICSH 2015 counts them among elliptocytes); ring cells are the
#: hypochromic cells of severe iron deficiency: a pale centre over more than half the diameter
#: inside a dark, violet-tinged rim.
RENDER_VARIANTS: dict[str, str] = {"pencil_cell": "elliptocyte", "ring_cell": "hypochromic"}
_VARIANT_FIELDS: dict[str, tuple[str, ...]] = {"pencil_cell": ("blood",), "ring_cell": ("blood",)}

#: Maturity range drawn for erythroid precursors (0 basophilic .. 1 orthochromatic).
_ERYTHROID: dict[str, tuple[float, float]] = {
    "nucleated_rbc": (0.5, 1.0), "normoblast": (0.0, 1.0), "megaloblast": (0.3, 1.0),
}

#: Lobe counts drawn (inclusive): ``neutrophil`` 2-4, ``hypersegmented_neutrophil`` 6-8 (the
#: label means >= 6 lobes, as in morph/rules/findings.yaml); 5-lobed cells are not drawn.
NEUTROPHIL_LOBES: tuple[int, int] = (2, 4)
HYPERSEG_LOBES: tuple[int, int] = (6, 8)

#: Mean diameter (um) of each label, relative scale (normal red cell = 7.5 um).
_DIAM_UM: dict[str, float] = {
    "normal": 7.5, "macrocyte": 9.4, "microcyte": 5.8, "spherocyte": 6.2, "target_cell": 7.7,
    "stomatocyte": 7.4, "ovalocyte": 7.6, "teardrop": 7.1, "burr_cell": 7.3,
    "schistocyte": 6.2, "hypochromic": 7.1, "elliptocyte": 7.3, "reticulocyte": 8.4,
    "sickle_cell": 7.5, "uncategorised": 7.5, "pencil_cell": 5.6, "ring_cell": 6.8,
    "nucleated_rbc": 8.5, "neutrophil": 12.0, "hypersegmented_neutrophil": 13.0,
    "lymphocyte": 8.5, "monocyte": 15.0, "other_wbc": 14.0,
    "normoblast": 9.0, "megaloblast": 14.0, "platelet": 2.6,
}


# ---------------------------------------------------------------------------
# Public data types
# ---------------------------------------------------------------------------


@dataclass
class SynthCell:
    """Ground truth for one rendered cell (coordinates in pixels, bbox exclusive)."""

    x: float
    y: float
    bbox: tuple[int, int, int, int]
    label: str
    kind: str
    diameter_px: float
    touches_border: bool
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "x": round(float(self.x), 2), "y": round(float(self.y), 2),
            "bbox": [int(v) for v in self.bbox], "label": self.label, "kind": self.kind,
            "diameter_px": round(float(self.diameter_px), 2),
            "touches_border": bool(self.touches_border),
        }


@dataclass(frozen=True)
class RenderStyle:
    """Stain, optics and density of one rendered field or crop.

    ``RenderStyle.random(seed_or_rng, stain)`` draws a plausible style; pass an explicit
    one (e.g. ``dataclasses.replace(RenderStyle.random(3), blur_um=0.0)``) to pin it.

    Attributes:
        background: RGB (0-255) of empty glass at the field centre.
        stain_strength: multiplies every optical density (pale vs dark smears).
        stain_tint: per-channel OD multipliers (R, G, B): hue variation between slides.
        vignetting: fractional darkening at the field corners.
        gradient: illumination slope along x and y (fraction across the field).
        blur_um: Gaussian optical blur (sigma, micrometres).
        noise: sensor noise standard deviation (0-255 grey levels).
        density: fraction of the field area covered by cells when ``n_cells`` is None.
        rbc_diameter_um: diameter of a normal red cell; all sizes scale with it.
        size_scale: per-label diameter multiplier, e.g. ``{"ovalocyte": 1.3}`` renders
            macro-ovalocytes (still labelled ``ovalocyte``).
        mottle: amplitude of slow, blotchy background unevenness (fields only).
        debris: small dark specks (dust, stain precipitate) per 10,000 um^2 of field;
            they carry no ground truth (a localizer should ignore them).
        jpeg_quality: 0 = off; else the image goes through an in-memory JPEG round trip at
            this quality, as camera and archive images do (Chula fields are JPEG).
    """

    background: tuple[float, float, float] = (170.0, 180.0, 174.0)
    stain_strength: float = 1.0
    stain_tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    vignetting: float = 0.1
    gradient: tuple[float, float] = (0.0, 0.0)
    blur_um: float = 0.08
    noise: float = 2.0
    density: float = 0.35
    rbc_diameter_um: float = 7.5
    size_scale: Mapping[str, float] = field(default_factory=dict)
    mottle: float = 0.0
    debris: float = 0.0
    jpeg_quality: int = 0

    @classmethod
    def random(cls, seed: int | np.random.Generator = 0, stain: str = "wright") -> RenderStyle:
        """A random plausible style for ``stain`` ("wright" or "nmb")."""
        _check_stain(stain)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        palette = _BACKGROUNDS[stain]
        base = np.asarray(palette[int(rng.integers(len(palette)))], np.float64)
        bg = np.clip(base * rng.uniform(0.92, 1.06) + rng.normal(0, 4, 3), 60, 252)
        return cls(
            background=(float(bg[0]), float(bg[1]), float(bg[2])),
            # ranges cover the Chula fields' measured cell optical densities (pale to dark)
            # (supravital NMB preparations are never very pale: the reticulum must show)
            stain_strength=float(rng.uniform(0.5, 1.2) if stain == "wright" else rng.uniform(0.75, 1.2)),
            stain_tint=tuple(float(v) for v in rng.normal(1.0, 0.1, 3).clip(0.75, 1.25)),  # type: ignore[arg-type]
            vignetting=float(rng.uniform(0.0, 0.18)),
            gradient=(float(rng.normal(0, 0.05)), float(rng.normal(0, 0.05))),
            # mostly sharp; one field in six noticeably soft (slightly out of focus)
            blur_um=float(rng.uniform(0.02, 0.18) if rng.random() > 1 / 6 else rng.uniform(0.18, 0.3)),
            noise=float(rng.uniform(0.8, 4.0)),
            density=float(rng.uniform(0.2, 0.5)),
            rbc_diameter_um=float(rng.normal(7.5, 0.15)),
            mottle=float(rng.uniform(0.0, 0.015)),
            debris=float(rng.uniform(0.0, 3.0)),
            jpeg_quality=int(rng.integers(70, 96)) if rng.random() < 0.6 else 0,
        )


@dataclass
class SynthField:
    """A rendered field: the image and the ground truth of every cell in it.

    ``cells`` are in drawing (z) order; masks are full (amodal) cell masks.
    """

    image: np.ndarray
    cells: list[SynthCell]
    stain: str
    field_type: str
    um_per_px: float
    seed: int = 0
    style: RenderStyle | None = None

    def instance_map(self) -> np.ndarray:
        """(H, W) int32 map: 0 = background, i + 1 = ``cells[i]``; the topmost cell owns overlaps."""
        out = np.zeros(self.image.shape[:2], np.int32)
        for i, c in enumerate(self.cells):
            if c.mask is None:
                continue
            x0, y0, x1, y1 = c.bbox
            out[y0:y1, x0:x1][c.mask] = i + 1
        return out

    def counts(self) -> dict[str, int]:
        """Cells per label (all cells, border ones included)."""
        out: dict[str, int] = {}
        for c in self.cells:
            out[c.label] = out.get(c.label, 0) + 1
        return out


# ---------------------------------------------------------------------------
# Stains
# ---------------------------------------------------------------------------

# Empty-glass colours: Chula fields (blue-grey, green-grey), TXL/brighter cream, pinkish.
_BACKGROUNDS: dict[str, list[tuple[float, float, float]]] = {
    "wright": [
        (112, 134, 152), (125, 140, 152), (142, 154, 146), (160, 170, 163), (172, 182, 175),
        (145, 172, 162), (182, 195, 185), (226, 226, 214), (222, 218, 222), (226, 233, 248),
    ],
    "nmb": [(222, 226, 216), (210, 218, 214), (232, 232, 226), (200, 210, 212), (190, 200, 196)],
}

# Optical density per unit amount, RGB.
_OD: dict[str, dict[str, tuple[float, float, float]]] = {
    "wright": {
        "hb": (0.19, 0.52, 0.34),         # haemoglobin + eosin: pink-salmon
        "poly": (0.30, 0.18, 0.06),       # polychromasia (RNA): blue-grey
        "nucleus": (0.72, 1.25, 0.30),    # azure chromatin: dark purple
        "cyto_neut": (0.07, 0.15, 0.07),  # neutrophil cytoplasm: pale lilac
        "granule": (0.16, 0.32, 0.10),    # fine lilac granules
        "cyto_lymph": (0.22, 0.12, 0.03), # lymphocyte cytoplasm: pale sky blue
        "cyto_mono": (0.22, 0.18, 0.08),  # monocyte cytoplasm: grey-blue
        "platelet": (0.45, 0.80, 0.25),   # purple granules
        "reticulum": (0.9, 0.8, 0.3),     # (not visible on Wright; unused)
    },
    "nmb": {
        "hb": (0.34, 0.20, 0.19),         # NMB counterstained cells: green/blue-grey
        "poly": (0.06, 0.03, 0.0),
        "nucleus": (1.10, 0.90, 0.38),    # dark blue
        "cyto_neut": (0.10, 0.08, 0.05),
        "granule": (0.10, 0.08, 0.04),
        "cyto_lymph": (0.18, 0.10, 0.04),
        "cyto_mono": (0.15, 0.10, 0.05),
        "platelet": (0.70, 0.60, 0.25),
        "reticulum": (1.60, 1.15, 0.45),  # precipitated RNA: dark blue
    },
}


def _check_stain(stain: str) -> None:
    if stain not in STAINS:
        raise MorphError("bad_request", f"unknown stain {stain!r}; expected one of {', '.join(STAINS)}")


class _Stain:
    """OD vectors of one stain with a style's tint and strength applied."""

    def __init__(self, stain: str, style: RenderStyle) -> None:
        tint = np.asarray(style.stain_tint, np.float32)
        self.vec = {k: np.asarray(v, np.float32) * tint for k, v in _OD[stain].items()}
        self.name = stain


# ---------------------------------------------------------------------------
# Texture bank: tileable smoothed noise at a few scales (fixed seed, built once)
# ---------------------------------------------------------------------------

_TEX_SIZE = 256
_TEX_SIGMAS = (0.6, 1.0, 1.6, 2.5, 4.0, 6.5, 10.0)


@functools.lru_cache(maxsize=1)
def _texture_bank() -> dict[float, np.ndarray]:
    rng = np.random.default_rng(12345)
    bank: dict[float, np.ndarray] = {}
    for s in _TEX_SIGMAS:
        t = ndimage.gaussian_filter(rng.normal(size=(_TEX_SIZE, _TEX_SIZE)), s, mode="wrap")
        t = (t - t.mean()) / (t.std() + 1e-9)
        bank[s] = t.astype(np.float32)
    return bank


def _tex(rng: np.random.Generator, sigma_px: float, h: int, w: int) -> np.ndarray:
    """An (h, w) patch of unit-variance smooth noise with correlation length ~sigma_px."""
    bank = _texture_bank()
    s = min(_TEX_SIGMAS, key=lambda k: abs(math.log(k) - math.log(max(sigma_px, 0.3))))
    t = bank[s]
    oy, ox = (int(v) for v in rng.integers(0, _TEX_SIZE, 2))
    if oy + h <= _TEX_SIZE and ox + w <= _TEX_SIZE:
        return t[oy:oy + h, ox:ox + w]
    rows = np.arange(oy, oy + h) % _TEX_SIZE
    cols = np.arange(ox, ox + w) % _TEX_SIZE
    return t[np.ix_(rows, cols)]


# ---------------------------------------------------------------------------
# Cell specifications (geometry + appearance), drawn from the label
# ---------------------------------------------------------------------------


@dataclass
class _Spec:
    label: str
    kind: str
    cx: float
    cy: float
    r: float           # body radius, px (placement and nominal size)
    ext: float         # max extent from centre, px (patch size)
    angle: float
    p: dict[str, Any]  # label-specific parameters


@dataclass
class _Geom:
    """Size of a cell being specified: shape steps may change the radius and the patch extent."""

    r: float           # body radius, px
    ext: float         # max extent from centre, px
    d_um: float        # drawn diameter, um
    um_per_px: float
    stain: str


def _make_spec(label: str, rng: np.random.Generator, style: RenderStyle, um_per_px: float,
               stain: str) -> _Spec:
    """Draw the geometry and appearance parameters of one cell of ``label`` (or of a render
    variant such as ``pencil_cell``, labelled as the vocabulary label it belongs to)."""
    truth = RENDER_VARIANTS.get(label, label)
    kind = kind_of(truth)
    d_um, mat = _draw_diameter(label, rng, style)
    g = _Geom(r=0.5 * d_um / um_per_px, ext=0.0, d_um=d_um, um_per_px=um_per_px, stain=stain)
    ang = float(rng.uniform(0, 2 * math.pi))
    p = _base_params(kind, rng)
    g.ext = g.r * 1.25
    if stain == "nmb" and kind == "rbc":
        # NMB: no central pallor to speak of (supravital, wet-fixed look): flat pale cells.
        p["pallor_d"] = float(rng.uniform(0.1, 0.3))
        p["rim"] = float(rng.uniform(0.1, 0.25))
    if kind == "rbc":
        shape = _RBC_SHAPES.get(label)
        if shape is not None:
            shape(p, rng, g)
    elif kind == "nucleated":
        g.ext = g.r * 1.12
        p["mat"] = mat
        _nucleated_params(label, p, rng, g.r, um_per_px)
    elif kind == "platelet":
        p["four"] = [(k, float(rng.normal(0, 0.09)), float(rng.uniform(0, 6.3))) for k in (2, 3, 4, 5)]
        p["aspect"] = float(rng.uniform(1.0, 1.5))
        g.ext = g.r * 1.7
    if kind == "rbc" and not p["sickle"] and label not in _OWN_EXTENT:
        g.ext = max(g.ext, g.r * math.sqrt(p["aspect"]) * 1.12 + g.r * p["cren"])
    return _Spec(truth, kind, 0.0, 0.0, g.r, g.ext + 2.0, ang, p)


def _draw_diameter(label: str, rng: np.random.Generator, style: RenderStyle) -> tuple[float, float]:
    """Diameter (um) and, for erythroid precursors, maturity (0 basophilic .. 1 orthochromatic)."""
    scale = style.rbc_diameter_um / 7.5 * float(style.size_scale.get(label, 1.0))
    d_um = _DIAM_UM[label] * scale * float(rng.normal(1.0, 0.045))
    mat = 1.0
    if label in _ERYTHROID:
        # maturity 0 (basophilic, large) .. 1 (orthochromatic, small): sizes of normoblasts
        # and megaloblasts overlap, so chromatin, not size alone, tells them apart
        mat = float(rng.uniform(*_ERYTHROID[label]))
        d_um *= 1.0 + 0.3 * (0.5 - mat)
    return d_um, mat


def _base_params(kind: str, rng: np.random.Generator) -> dict[str, Any]:
    """Parameters every cell has (outline wobble, pallor, density, texture, edge), drawn in a
    fixed order so that a seed gives the same cell."""
    return {
        "four": [(k, float(rng.normal(0, 0.012 if kind == "rbc" else 0.02)),
                  float(rng.uniform(0, 2 * math.pi))) for k in (2, 3, 4)],
        "aspect": float(rng.uniform(1.0, 1.08)),
        "dens": float(rng.normal(1.0, 0.07)),
        "pallor_d": float(rng.uniform(0.35, 0.6)), "pallor_r": float(rng.uniform(0.38, 0.5)),
        "slit": (1.0, 1.0), "rim": float(rng.uniform(0.05, 0.15)), "spot": 0.0,
        "poly": 0.0, "cren": 0.0, "tail": 0.0, "cuts": [], "dome": False, "sickle": False,
        "retic": 0.0, "tex_amp": float(rng.uniform(0.02, 0.06)),
        # refractile boundary: a thin dark line just inside the edge, a faint bright halo outside
        "edge": float(rng.uniform(0.05, 0.5)), "halo": float(rng.uniform(0.0, 0.06)),
    }


# -- red-cell shapes: one step per label, each adjusting the base parameters ------------------
def _macrocyte(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    p["pallor_r"] = float(rng.uniform(0.3, 0.42))


def _microcyte(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    p["dens"] *= 0.95


def _spherocyte(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    p["dome"] = True
    p["dens"] *= 1.3
    p["pallor_d"] = 0.0


def _target_cell(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    p["pallor_d"] = float(rng.uniform(0.55, 0.75))
    p["pallor_r"] = float(rng.uniform(0.55, 0.65))
    p["spot"] = float(rng.uniform(0.55, 0.8))
    p["spot_r"] = float(rng.uniform(0.18, 0.26))


def _stomatocyte(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    # a mouth-like pallor: an elongated, often slightly curved slit
    p["slit"] = (float(rng.uniform(1.0, 1.4)), float(rng.uniform(0.22, 0.45)))
    p["pallor_r"] = float(rng.uniform(0.45, 0.6))
    p["slit_bend"] = float(rng.normal(0, 0.5))
    p["pallor_d"] = float(rng.uniform(0.55, 0.8))


def _ovalocyte(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    p["aspect"] = float(rng.uniform(1.3, 1.7))


def _elliptocyte(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    p["aspect"] = float(rng.uniform(1.8, 2.5))
    p["pallor_d"] = float(rng.uniform(0.15, 0.4))
    g.ext = g.r * math.sqrt(p["aspect"]) * 1.1


def _pencil_cell(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    # iron deficiency: a long thin elliptocyte (long axis 2.5-3.5x the short one, about 10 um by
    # 3 um), small and pale
    p["aspect"] = float(rng.uniform(2.5, 3.5))
    p["pallor_d"] = float(rng.uniform(0.45, 0.7))
    p["pallor_r"] = float(rng.uniform(0.5, 0.65))
    p["dens"] *= 0.85
    g.ext = g.r * math.sqrt(p["aspect"]) * 1.1


def _teardrop(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    p["aspect"] = float(rng.uniform(1.05, 1.3))
    p["tail"] = float(rng.uniform(0.5, 1.0))
    p["tail_w"] = float(rng.uniform(0.22, 0.38))
    p["tail_bend"] = float(rng.normal(0, 0.12))
    g.ext = g.r * (math.sqrt(p["aspect"]) * (1 + p["tail"]) + 0.1)


def _burr_cell(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    p["cren"] = float(rng.uniform(0.07, 0.13))
    p["cren_n"] = int(rng.integers(10, 18))
    p["cren_phase"] = float(rng.uniform(0, 2 * math.pi))
    p["pallor_d"] *= 0.6
    g.ext = g.r * 1.4


def _schistocyte(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    # fragments: straight cuts (triangles, helmets) or concave bites (horned helmets)
    n_cuts = int(rng.integers(1, 3))
    base = float(rng.uniform(0, 2 * math.pi))

    def bite() -> float:
        return float(rng.uniform(0.5, 1.2)) if rng.random() < 0.45 else 0.0

    cuts = [(base, float(rng.uniform(0.0, 0.35)), bite())]
    if n_cuts == 2:
        cuts.append((base + float(rng.uniform(1.4, 2.4)) * float(rng.choice([-1, 1])),
                     float(rng.uniform(0.15, 0.5)), bite()))
    p["cuts"] = cuts
    p["pallor_d"] = float(rng.uniform(0.0, 0.25))
    p["dens"] *= 1.1
    p["four"] = [(k, float(rng.normal(0, 0.05)), float(rng.uniform(0, 6.3))) for k in (2, 3, 5)]


def _hypochromic(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    p["pallor_d"] = float(rng.uniform(0.7, 0.9))
    p["pallor_r"] = float(rng.uniform(0.64, 0.75))
    p["dens"] *= 0.85


def _ring_cell(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    # severe iron deficiency: an almost empty centre over 55-75% of the diameter and a narrow,
    # dark rim whose stain leans violet (what a nucleus detector must not take for chromatin)
    p["pallor_d"] = float(rng.uniform(0.85, 0.97))
    p["pallor_r"] = float(rng.uniform(0.62, 0.8))
    p["rim"] = float(rng.uniform(0.5, 1.1))
    p["rim_violet"] = float(rng.uniform(0.3, 0.9))


def _reticulocyte(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    if g.stain == "wright":
        p["poly"] = float(rng.uniform(0.35, 0.7))
        p["pallor_d"] = float(rng.uniform(0.0, 0.12))
        p["dens"] *= float(rng.uniform(0.75, 0.9))
    else:
        p["retic"] = float(rng.uniform(0.55, 1.0))
    p["four"] = [(k, float(rng.normal(0, 0.025)), float(rng.uniform(0, 6.3))) for k in (2, 3)]


def _sickle_cell(p: dict[str, Any], rng: np.random.Generator, g: _Geom) -> None:
    # crescent: inside circle C1, outside circle C2 through both tips and the inner
    # edge of the middle (thickness `width`)
    length = g.d_um * float(rng.uniform(1.3, 1.7)) / g.um_per_px
    half_arc = float(rng.uniform(0.8, 1.2))
    r1 = 0.5 * length / math.sin(half_arc)
    a_ = r1 * math.cos(half_arc)
    width = min(float(rng.uniform(2.0, 3.0)) / g.um_per_px, 0.8 * (r1 - a_))
    b_ = r1 - width
    k = ((0.5 * length) ** 2 + a_ * a_ - b_ * b_) / (2.0 * (b_ - a_))
    p["sickle"] = (r1, k + b_, k, r1 - 0.5 * width)  # r1, r2, C2 offset, C1 centre
    p["dens"] *= 1.2
    g.r = 0.3 * length
    g.ext = math.hypot(0.5 * length, 0.5 * width + a_) + width + 2


_RBC_SHAPES: dict[str, Any] = {
    "macrocyte": _macrocyte, "microcyte": _microcyte, "spherocyte": _spherocyte,
    "target_cell": _target_cell, "stomatocyte": _stomatocyte, "ovalocyte": _ovalocyte,
    "elliptocyte": _elliptocyte, "pencil_cell": _pencil_cell, "teardrop": _teardrop,
    "burr_cell": _burr_cell, "schistocyte": _schistocyte, "hypochromic": _hypochromic,
    "ring_cell": _ring_cell, "reticulocyte": _reticulocyte, "sickle_cell": _sickle_cell,
}
#: shapes that set their own patch extent
_OWN_EXTENT = frozenset({"elliptocyte", "pencil_cell", "teardrop"})


# -- nucleated cells: nucleus shape, chromatin pattern and cytoplasm, one step per label -------
_Lobes = list[tuple[float, float, float]]
_Links = list[tuple[float, float, float, float]]


def _nucleated_params(label: str, p: dict[str, Any], rng: np.random.Generator, r: float,
                      um_per_px: float) -> None:
    """Nucleus shape, chromatin pattern and cytoplasm of a nucleated cell (radius r px)."""
    p["aspect"] = float(rng.uniform(1.0, 1.1))
    p["cyto"] = "cyto_neut"
    p["cyto_d"] = 0.8
    p["gran"] = 0.0
    p["hb_cyto"] = 0.0
    p["poly_cyto"] = 0.0
    p["vacuoles"] = []
    p["nucleoli"] = []
    p["bite"] = None
    step = _NUCLEATED.get(label)
    lobes, links = step(label, p, rng, r, um_per_px) if step is not None else ([], [])
    p["lobes"] = lobes
    p["links"] = links
    # segmented nuclei: each lobe a short sausage (capsule) at a random angle, not a ball
    p["lobe_axes"] = []
    if len(lobes) > 1:
        for _ in lobes:
            a = float(rng.uniform(0, math.pi))
            half = float(rng.uniform(*p["lobe_half"]))
            p["lobe_axes"].append((half * math.cos(a), half * math.sin(a)))
    p["link_r"] = 0.22 / um_per_px


def _round_nucleus(rng: np.random.Generator, r: float, rn: float, off_range: tuple[float, float]
                   ) -> _Lobes:
    """One round nucleus of radius rn, set off-centre by a fraction of the free room."""
    off = (r - rn) * float(rng.uniform(*off_range))
    a = float(rng.uniform(0, 6.3))
    return [(off * math.cos(a), off * math.sin(a), rn)]


def _neutrophil(label: str, p: dict[str, Any], rng: np.random.Generator, r: float, um_per_px: float
                ) -> tuple[_Lobes, _Links]:
    lo, hi = NEUTROPHIL_LOBES if label == "neutrophil" else HYPERSEG_LOBES
    n = int(rng.integers(lo, hi + 1))
    hyper = n > 4
    lobe_um = rng.uniform(1.0, 1.2) if hyper else rng.uniform(1.25, 1.6)
    lr = float(lobe_um) / um_per_px
    lobes, links = _lobe_chain(n, lr, r * (0.72 if hyper else 0.62), rng,
                               step=(2.2, 2.7) if hyper else (1.8, 2.4))
    p["lobe_half"] = (0.05, 0.3) if hyper else (0.2, 0.6)
    p["chrom"] = "clumped"
    p["gran"] = float(rng.uniform(0.5, 1.0))
    p["cyto_d"] = float(rng.uniform(0.7, 1.1))
    p["nuc_d"] = float(rng.uniform(0.9, 1.1))
    return lobes, links


def _lymphocyte(label: str, p: dict[str, Any], rng: np.random.Generator, r: float, um_per_px: float
                ) -> tuple[_Lobes, _Links]:
    rn = r * float(rng.uniform(0.78, 0.88))
    lobes = _round_nucleus(rng, r, rn, (0.0, 0.8))
    p["chrom"] = "clumped"
    p["cyto"] = "cyto_lymph"
    p["cyto_d"] = float(rng.uniform(0.6, 1.1))
    p["nuc_d"] = float(rng.uniform(0.8, 1.0))
    return lobes, []


def _monocyte(label: str, p: dict[str, Any], rng: np.random.Generator, r: float, um_per_px: float
              ) -> tuple[_Lobes, _Links]:
    rn = r * float(rng.uniform(0.5, 0.6))
    a = float(rng.uniform(0, 6.3))
    off = r * 0.15
    cx, cy = off * math.cos(a), off * math.sin(a)
    bd = rn * float(rng.uniform(0.9, 1.3))
    p["bite"] = (cx + bd * math.cos(a), cy + bd * math.sin(a), rn * float(rng.uniform(0.45, 0.7)))
    p["chrom"] = "lacy"
    p["cyto"] = "cyto_mono"
    p["cyto_d"] = float(rng.uniform(0.8, 1.2))
    p["nuc_d"] = float(rng.uniform(0.75, 0.9))
    p["vacuoles"] = [(float(rng.uniform(-0.6, 0.6)) * r, float(rng.uniform(-0.6, 0.6)) * r,
                      float(rng.uniform(0.3, 0.6)) / um_per_px) for _ in range(int(rng.integers(0, 5)))]
    return [(cx, cy, rn)], []


def _other_wbc(label: str, p: dict[str, Any], rng: np.random.Generator, r: float, um_per_px: float
               ) -> tuple[_Lobes, _Links]:
    # myelocyte-like granulocyte precursor
    rn = r * float(rng.uniform(0.48, 0.6))
    lobes = _round_nucleus(rng, r, rn, (0.3, 0.8))
    p["chrom"] = "lacy"
    p["gran"] = float(rng.uniform(0.8, 1.3))
    p["cyto_d"] = float(rng.uniform(0.9, 1.3))
    p["nuc_d"] = float(rng.uniform(0.85, 1.0))
    p["hb_cyto"] = float(rng.uniform(0.05, 0.15))
    return lobes, []


def _normoblast(label: str, p: dict[str, Any], rng: np.random.Generator, r: float, um_per_px: float
                ) -> tuple[_Lobes, _Links]:
    mat = p["mat"]  # 0 basophilic .. 1 orthochromatic
    rn = r * (float(rng.uniform(0.5, 0.6)) - 0.15 * mat)
    lobes = _round_nucleus(rng, r, rn, (0.0, 0.7))
    if mat > 0.6 or label == "nucleated_rbc":
        p["chrom"] = "dense" if rng.random() < 0.4 else "clumped_coarse"
        p["nuc_d"] = float(rng.uniform(1.15, 1.4))
    else:  # earlier: coarse "cartwheel" clumps, not yet pyknotic
        p["chrom"] = "clumped_coarse"
        p["nuc_d"] = float(rng.uniform(0.95, 1.2))
    p["cyto"] = "cyto_neut"
    p["cyto_d"] = 0.0
    p["hb_cyto"] = 0.3 + 0.65 * mat
    p["poly_cyto"] = 1.0 - 0.75 * mat
    return lobes, []


def _megaloblast(label: str, p: dict[str, Any], rng: np.random.Generator, r: float, um_per_px: float
                 ) -> tuple[_Lobes, _Links]:
    rn = r * float(rng.uniform(0.55, 0.68))
    lobes = _round_nucleus(rng, r, rn, (0.0, 0.6))
    p["chrom"] = "sieve"
    p["cyto"] = "cyto_neut"
    p["cyto_d"] = 0.0
    mat = p["mat"]  # haemoglobinised cytoplasm ahead of the still open nucleus
    p["hb_cyto"] = 0.35 + 0.5 * mat
    p["poly_cyto"] = 0.7 - 0.45 * mat
    p["nuc_d"] = float(rng.uniform(0.45, 0.6))
    if rng.random() < 0.5:
        p["nucleoli"] = [(lobes[0][0] + float(rng.uniform(-0.4, 0.4)) * rn,
                          lobes[0][1] + float(rng.uniform(-0.4, 0.4)) * rn,
                          float(rng.uniform(0.5, 0.9)) / um_per_px)]
    return lobes, []


_NUCLEATED: dict[str, Any] = {
    "neutrophil": _neutrophil, "hypersegmented_neutrophil": _neutrophil,
    "lymphocyte": _lymphocyte, "monocyte": _monocyte, "other_wbc": _other_wbc,
    "nucleated_rbc": _normoblast, "normoblast": _normoblast, "megaloblast": _megaloblast,
}


def _lobe_chain(n: int, lr: float, max_r: float, rng: np.random.Generator,
                step: tuple[float, float] = (1.8, 2.4),
                ) -> tuple[list[tuple[float, float, float]], list[tuple[float, float, float, float]]]:
    """Lobes of a segmented nucleus as a curled chain, centred, kept within max_r."""
    pts = [(0.0, 0.0)]
    head = float(rng.uniform(0, 2 * math.pi))
    turn = float(rng.choice([-1.0, 1.0])) * float(rng.uniform(0.5, 1.0))
    for _ in range(n - 1):
        for _try in range(12):
            dist = lr * float(rng.uniform(*step))
            h = head + turn + float(rng.normal(0, 0.35))
            x = pts[-1][0] + dist * math.cos(h)
            y = pts[-1][1] + dist * math.sin(h)
            mx = (sum(q[0] for q in pts) + x) / (len(pts) + 1)
            my = (sum(q[1] for q in pts) + y) / (len(pts) + 1)
            ok_r = all(math.hypot(x - mx, y - my) <= max_r and math.hypot(q[0] - mx, q[1] - my) <= max_r
                       for q in pts)
            ok_sep = all(math.hypot(x - q[0], y - q[1]) >= step[0] * lr for q in pts[:-1])
            if ok_r and ok_sep:
                break
            head += 0.6
        pts.append((x, y))
        head = h
    mx = sum(q[0] for q in pts) / len(pts)
    my = sum(q[1] for q in pts) / len(pts)
    far = max(math.hypot(x - mx, y - my) for x, y in pts)
    k = min(1.0, max_r / far) if far > 0 else 1.0  # a chain that strayed is pulled back in
    lobes = [((x - mx) * k, (y - my) * k, lr * float(rng.uniform(0.85, 1.15))) for x, y in pts]
    links = [(lobes[i][0], lobes[i][1], lobes[i + 1][0], lobes[i + 1][1]) for i in range(n - 1)]
    return lobes, links


# ---------------------------------------------------------------------------
# Drawing: one cell -> OD patch + mask
# ---------------------------------------------------------------------------


def _draw(spec: _Spec, od: np.ndarray, st: _Stain, rng: np.random.Generator,
          um_per_px: float) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Add the cell's OD into ``od`` (H, W, 3) in place; return (clipped mask, bbox) or None."""
    H, W = od.shape[:2]
    e = spec.ext
    x0 = max(int(math.floor(spec.cx - e)), 0)
    y0 = max(int(math.floor(spec.cy - e)), 0)
    x1 = min(int(math.ceil(spec.cx + e)) + 1, W)
    y1 = min(int(math.ceil(spec.cy + e)) + 1, H)
    if x1 <= x0 or y1 <= y0:
        return None
    X = (np.arange(x0, x1, dtype=np.float32) - np.float32(spec.cx))[None, :]
    Y = (np.arange(y0, y1, dtype=np.float32) - np.float32(spec.cy))[:, None]
    c, s = math.cos(spec.angle), math.sin(spec.angle)
    U = X * c + Y * s
    V = -X * s + Y * c
    if spec.kind == "rbc":
        add, mask = _draw_rbc(spec, U, V, st, rng, um_per_px)
    elif spec.kind == "nucleated":
        add, mask = _draw_nucleated(spec, U, V, st, rng, um_per_px)
    else:
        add, mask = _draw_platelet(spec, U, V, st, rng, um_per_px)
    od[y0:y1, x0:x1] += add
    if not mask.any():
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    by0, by1 = int(rows[0]), int(rows[-1]) + 1
    bx0, bx1 = int(cols[0]), int(cols[-1]) + 1
    return mask[by0:by1, bx0:bx1].copy(), (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1)


def _fourier(th: np.ndarray, four: list[tuple[int, float, float]]) -> np.ndarray:
    out = np.zeros_like(th)
    for k, a, ph in four:
        out += a * np.cos(k * th + ph)
    return out


def _edge_alpha(sd: np.ndarray, width: float = 0.9) -> np.ndarray:
    return np.clip(0.5 - sd / width, 0.0, 1.0)


def _ellipse_coords(spec: _Spec, U: np.ndarray, V: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    asp = spec.p["aspect"]
    a = spec.r * math.sqrt(asp)
    b = spec.r / math.sqrt(asp)
    pu = U / a
    pv = V / b
    q = np.sqrt(pu * pu + pv * pv)
    th = np.arctan2(pv, pu)
    return pu, pv, q, th, a, b


def _draw_rbc(spec: _Spec, U: np.ndarray, V: np.ndarray, st: _Stain, rng: np.random.Generator,
              um_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    p = spec.p
    if p["sickle"]:
        r1, r2, off, c1 = p["sickle"]
        Vs = V - c1
        d1 = np.sqrt(U * U + Vs * Vs) - r1
        d2 = r2 - np.sqrt(U * U + (Vs - off) ** 2)
        sd = np.maximum(d1, d2)
        alpha = _edge_alpha(sd)
        h = np.ones_like(sd)  # flat and dense, no pallor
        rr = np.clip(1.0 + sd / max(r1 * 0.2, 1.0), 0, 1)
    else:
        pu, pv, q, th, a, b = _ellipse_coords(spec, U, V)
        qb_body = 1.0 + _fourier(th, p["four"])
        if p["cren"] > 0:
            qb_body = qb_body + p["cren"] * np.maximum(np.cos(p["cren_n"] * th + p["cren_phase"]), 0) ** 3
        qb = qb_body
        if p["tail"] > 0:
            d = np.angle(np.exp(1j * (th - p["tail_bend"] * q)))
            qb = qb_body + p["tail"] * np.exp(-((d / p["tail_w"]) ** 2)).astype(np.float32)
        rho = q / qb
        r_loc = np.sqrt((a * np.cos(th)) ** 2 + (b * np.sin(th)) ** 2) * qb
        sd = (rho - 1.0) * r_loc
        for ang, dcut, bite_r in p["cuts"]:
            nx, ny = math.cos(ang), math.sin(ang)
            if bite_r > 0:  # remove a disc: a concave edge with horns at its ends
                br = bite_r * spec.r
                bx, by = nx * (dcut * spec.r + br), ny * (dcut * spec.r + br)
                sd = np.maximum(sd, br - np.sqrt((U - bx) ** 2 + (V - by) ** 2))
            else:
                sd = np.maximum(sd, U * nx + V * ny - dcut * spec.r)
        alpha = _edge_alpha(sd)
        rr = np.clip(q / qb_body, 0.0, 1.0)
        if p["dome"]:
            h = 1.15 - 0.3 * rr * rr
        else:
            sx, sy = p["slit"]
            pv_ = pv - p["slit_bend"] * pu * pu if "slit_bend" in p else pv
            pr = np.sqrt((pu / sx) ** 2 + (pv_ / sy) ** 2) / p["pallor_r"]
            h = 1.0 - p["pallor_d"] * np.exp(-(pr ** 4))
            if p["spot"] > 0:
                h = h + p["spot"] * np.exp(-((q / p["spot_r"]) ** 2))
        rim = np.exp(-(((rr - 0.82) / 0.15) ** 2))
        h = h + p["rim"] * rim
    tex = _tex(rng, 2.0 / max(um_per_px / 0.1, 0.3), *U.shape)
    ew = max(0.8, 0.15 / um_per_px)
    if p["edge"] > 0:
        h = h + p["edge"] * np.exp(-(((sd + ew) / ew) ** 2))
    amount = (alpha * h * (1.0 + p["tex_amp"] * tex)).astype(np.float32)
    vec = st.vec["hb"] * np.float32(p["dens"])
    if p["poly"] > 0:
        vec = vec * np.float32(1.0 - 0.25 * p["poly"]) + st.vec["poly"] * np.float32(p["poly"])
    add = amount[..., None] * vec
    if p.get("rim_violet", 0.0) > 0:  # ring cells only (other cells draw exactly as before)
        add += (alpha * p["rim_violet"] * rim).astype(np.float32)[..., None] * st.vec["platelet"]
    if p["halo"] > 0:
        halo = p["halo"] * np.exp(-(((sd - 1.5 * ew) / (1.5 * ew)) ** 2)) * (sd > 0)
        add -= halo[..., None].astype(np.float32)
    if p["retic"] > 0:
        add += _reticulum(spec, U, V, alpha, st, rng, um_per_px)[..., None] * st.vec["reticulum"]
    return add, sd < 0


def _reticulum(spec: _Spec, U: np.ndarray, V: np.ndarray, alpha: np.ndarray, st: _Stain,
               rng: np.random.Generator, um_per_px: float) -> np.ndarray:
    """Blue precipitated RNA: filaments (noise zero-crossings) and granules, in a clump."""
    amt = spec.p["retic"]
    h, w = U.shape
    fil_t = _tex(rng, 0.3 / um_per_px, h, w)
    fil = np.exp(-((fil_t / 0.28) ** 2))
    dots = np.clip(_tex(rng, 0.12 / um_per_px, h, w) - 1.6, 0, None) * 1.6
    # where the reticulum lies: a central clump, bigger when immature (amt high)
    cx = float(rng.uniform(-0.25, 0.25)) * spec.r
    cy = float(rng.uniform(-0.25, 0.25)) * spec.r
    rad = spec.r * (0.35 + 0.5 * amt)
    region = np.exp(-(((U - cx) ** 2 + (V - cy) ** 2) / (rad * rad)) ** 2)
    region = region * (0.6 + 0.4 * np.clip(_tex(rng, 1.0 / um_per_px, h, w) + 0.5, 0, 1))
    inside = np.clip((alpha - 0.5) * 2, 0, 1)
    return (inside * region * (fil * (0.4 + 0.5 * amt) + dots * 0.8)).astype(np.float32)


def _circle_sd(U: np.ndarray, V: np.ndarray, x: float, y: float, r: float) -> np.ndarray:
    return np.sqrt((U - x) ** 2 + (V - y) ** 2) - r


def _segment_sd(U: np.ndarray, V: np.ndarray, ax: float, ay: float, bx: float, by: float,
                r: float) -> np.ndarray:
    dx, dy = bx - ax, by - ay
    L2 = dx * dx + dy * dy + 1e-9
    t = np.clip(((U - ax) * dx + (V - ay) * dy) / L2, 0.0, 1.0)
    return np.sqrt((U - ax - t * dx) ** 2 + (V - ay - t * dy) ** 2) - r


def _chromatin(kind: str, rng: np.random.Generator, h: int, w: int, um_per_px: float) -> np.ndarray:
    if kind == "dense":
        return 1.0 + 0.12 * _tex(rng, 0.35 / um_per_px, h, w)
    if kind == "clumped":
        t = _tex(rng, 0.3 / um_per_px, h, w)
        return 0.85 + 0.22 * np.tanh(1.5 * t)
    if kind == "clumped_coarse":  # condensed "cartwheel" clumps of a late normoblast
        t = _tex(rng, 0.35 / um_per_px, h, w)
        return 0.95 + 0.35 * np.tanh(2.0 * t)
    if kind == "sieve":  # fine open chromatin: many small light holes in a fine mesh
        t = _tex(rng, 0.13 / um_per_px, h, w)
        return 0.75 + 0.5 * np.tanh(1.5 * t)
    # lacy (monocyte, myelocyte)
    t = _tex(rng, 0.25 / um_per_px, h, w)
    return 0.8 + 0.25 * np.tanh(t)


def _draw_nucleated(spec: _Spec, U: np.ndarray, V: np.ndarray, st: _Stain,
                    rng: np.random.Generator, um_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    p = spec.p
    pu, pv, q, th, a, b = _ellipse_coords(spec, U, V)
    qb = 1.0 + _fourier(th, p["four"])
    r_loc = np.sqrt((a * np.cos(th)) ** 2 + (b * np.sin(th)) ** 2) * qb
    sd_c = (q / qb - 1.0) * r_loc
    alpha_c = _edge_alpha(sd_c)
    h, w = U.shape
    # nucleus
    sd_n = np.full(U.shape, np.inf, np.float32)
    for i, (x, y, r) in enumerate(p["lobes"]):
        if p["lobe_axes"]:
            dx, dy = p["lobe_axes"][i]
            d = _segment_sd(U, V, x - dx * r, y - dy * r, x + dx * r, y + dy * r, r * 0.85)
        else:
            d = _circle_sd(U, V, x, y, r)
        sd_n = np.minimum(sd_n, d)
    for ax, ay, bx, by in p["links"]:
        sd_n = np.minimum(sd_n, _segment_sd(U, V, ax, ay, bx, by, p["link_r"]))
    if p["bite"] is not None:
        bx, by, br = p["bite"]
        sd_n = np.maximum(sd_n, -_circle_sd(U, V, bx, by, br))
    if len(p["lobes"]) == 1:  # a little irregularity on round nuclei
        lx, ly, _ = p["lobes"][0]
        sd_n = sd_n + p["lobes"][0][2] * 0.04 * _fourier(np.arctan2(V - ly, U - lx), p["four"]) / 0.02
    alpha_n = _edge_alpha(sd_n, 1.1)
    chrom = _chromatin(p["chrom"], rng, h, w, um_per_px)
    amount_n = alpha_n * chrom * p["nuc_d"]
    for nx, ny, nr in p["nucleoli"]:
        amount_n = amount_n * (1.0 - 0.35 * np.exp(-(((U - nx) ** 2 + (V - ny) ** 2) / (nr * nr))))
    # cytoplasm
    tex_c = _tex(rng, 0.8 / um_per_px, h, w)
    cyto = alpha_c * (1.0 + 0.12 * tex_c)
    for vx, vy, vr in p["vacuoles"]:
        cyto = cyto * (1.0 - 0.6 * np.exp(-(((U - vx) ** 2 + (V - vy) ** 2) / (vr * vr)) ** 2))
    add = (cyto * p["cyto_d"])[..., None] * st.vec[p["cyto"]]
    if p["hb_cyto"] > 0 or p["poly_cyto"] > 0:
        add += cyto[..., None] * (st.vec["hb"] * np.float32(p["hb_cyto"]) + st.vec["poly"] * np.float32(p["poly_cyto"]))
    if p["gran"] > 0:
        g = np.clip(_tex(rng, 0.1 / um_per_px, h, w) + 0.3, 0, None)
        add += (alpha_c * (1 - alpha_n) * g * (0.45 * p["gran"]))[..., None] * st.vec["granule"]
    add += amount_n[..., None].astype(np.float32) * st.vec["nucleus"]
    return add.astype(np.float32), (sd_c < 0) | (sd_n < 0)


def _draw_platelet(spec: _Spec, U: np.ndarray, V: np.ndarray, st: _Stain,
                   rng: np.random.Generator, um_per_px: float) -> tuple[np.ndarray, np.ndarray]:
    pu, pv, q, th, a, b = _ellipse_coords(spec, U, V)
    qb = 1.0 + _fourier(th, spec.p["four"])
    r_loc = np.sqrt((a * np.cos(th)) ** 2 + (b * np.sin(th)) ** 2) * qb
    sd = (q / qb - 1.0) * r_loc
    alpha = _edge_alpha(sd)
    h, w = U.shape
    g = np.clip(_tex(rng, 0.15 / um_per_px, h, w) + 0.3, 0, None)
    centre = np.exp(-((q / 0.65) ** 2))
    amount = alpha * (0.25 + 0.9 * centre * g) * spec.p["dens"]
    return (amount[..., None] * st.vec["platelet"]).astype(np.float32), sd < 0


# ---------------------------------------------------------------------------
# Compositing
# ---------------------------------------------------------------------------


def _illumination(style: RenderStyle, h: int, w: int) -> np.ndarray:
    yy = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - 0.5)[:, None]
    xx = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5)[None, :]
    aspect = w / max(h, 1)
    r2 = ((xx * aspect) ** 2 + yy * yy) / (0.25 * (aspect * aspect + 1))
    gain = (1.0 - style.vignetting * r2) * (1.0 + style.gradient[0] * xx + style.gradient[1] * yy)
    return gain[..., None] * np.asarray(style.background, np.float32)


def _mottle(rng: np.random.Generator, h: int, w: int, amp: float) -> np.ndarray:
    """Slow multiplicative unevenness of the glass (~20-40 um blotches)."""
    cell = 48
    small = rng.standard_normal((h // cell + 3, w // cell + 3)).astype(np.float32)
    big = ndimage.zoom(small, cell, order=3, prefilter=False)[:h, :w]
    return 1.0 + np.float32(amp) * big / (float(big.std()) + 1e-6)


def _add_debris(od: np.ndarray, style: RenderStyle, rng: np.random.Generator, um_per_px: float,
                st: _Stain) -> None:
    """Tiny dark specks without ground truth: dust and stain precipitate."""
    h, w = od.shape[:2]
    area_um2 = h * w * um_per_px * um_per_px
    n = int(rng.poisson(style.debris * area_um2 / 1e4))
    for _ in range(n):
        r = float(rng.uniform(0.2, 0.6)) / um_per_px
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        e = int(math.ceil(3 * r)) + 1
        x0, x1 = max(int(cx) - e, 0), min(int(cx) + e + 1, w)
        y0, y1 = max(int(cy) - e, 0), min(int(cy) + e + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        X = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        Y = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        blob = np.exp(-(X * X + Y * Y) / (r * r)).astype(np.float32)
        grey = np.float32(rng.uniform(0.2, 0.8))
        tone = st.vec["nucleus"] * np.float32(0.5) if rng.random() < 0.5 else np.full(3, 0.6, np.float32)
        od[y0:y1, x0:x1] += blob[..., None] * tone * grey


def _finish(od: np.ndarray, style: RenderStyle, rng: np.random.Generator, um_per_px: float,
            light: np.ndarray | None = None) -> np.ndarray:
    h, w = od.shape[:2]
    if light is None:
        light = _illumination(style, h, w)
    img = light * np.exp(-od * np.float32(style.stain_strength))
    sigma = style.blur_um / um_per_px
    if sigma > 0.15:
        img = ndimage.gaussian_filter(img, (sigma, sigma, 0), mode="nearest")
    if style.noise > 0:
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(style.noise)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if style.jpeg_quality > 0:
        out = _jpeg_round_trip(out, style.jpeg_quality)
    return out


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """Compression artefacts as in camera/archive JPEGs (in memory, no file); a style's
    quality is clamped to 10..100 rather than refused."""
    return encode_decode_jpeg(image, int(min(max(quality, 10), 100)))


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_seed(seed: object) -> None:
    if not (_is_int(seed) and int(seed) >= 0):  # type: ignore[call-overload]
        raise MorphError("bad_request", f"seed must be an integer >= 0, got {seed!r}")


def _check_field_type(field_type: str) -> None:
    if field_type not in FIELD_TYPES:
        raise MorphError("bad_request",
                         f"unknown field_type {field_type!r}; expected one of {', '.join(FIELD_TYPES)}")


def default_label_weights(field_type: str) -> dict[str, float]:
    """The label mix a field type gets when ``label_weights`` is None."""
    _check_field_type(field_type)
    return dict(_DEFAULT_WEIGHTS[field_type])


def _check_weights(field_type: str, label_weights: Mapping[str, float] | None) -> dict[str, float]:
    if label_weights is None:
        return default_label_weights(field_type)
    allowed = SYNTH_LABELS[field_type] + tuple(
        v for v, types in _VARIANT_FIELDS.items() if field_type in types)
    out: dict[str, float] = {}
    for k, v in label_weights.items():
        if k not in allowed:
            raise MorphError("bad_request",
                             f"label {k!r} cannot be rendered in a {field_type!r} field; "
                             f"renderable: {', '.join(allowed)}", detail={"label": k})
        if not (_is_real(v) and math.isfinite(v) and v >= 0):
            raise MorphError("bad_request", f"weight of {k!r} must be a finite number >= 0, got {v!r}")
        out[k] = float(v)
    if sum(out.values()) <= 0:
        raise MorphError("bad_request", "label_weights must have at least one positive weight")
    return out


def render_field(
    seed: int,
    *,
    field_type: str = "blood",
    height: int = 480,
    width: int = 640,
    um_per_px: float = DEFAULT_UM_PER_PX,
    n_cells: int | None = None,
    label_weights: Mapping[str, float] | None = None,
    overlap: float = 0.1,
    style: RenderStyle | None = None,
    overlap_depth: tuple[float, float] = (0.6, 0.9),
) -> SynthField:
    """Render one labelled smear field.

    Args:
        seed: the whole picture follows from it (same seed and arguments, same image).
        field_type: "blood" (Wright), "nmb" (new methylene blue) or "marrow" (Wright).
        height, width: image size in pixels.
        um_per_px: physical scale; a normal red cell is ``style.rbc_diameter_um`` across.
        n_cells: number of cells to place (all kinds); None draws it from ``style.density``.
            Cells that find no room are dropped (logged).
        label_weights: relative frequency per label (labels from ``SYNTH_LABELS[field_type]``,
            or a shape of :data:`RENDER_VARIANTS` such as ``pencil_cell`` on blood fields, whose
            ground-truth label is the vocabulary label it belongs to); None uses
            :func:`default_label_weights`.
        overlap: fraction (0-1) of cells placed overlapping a neighbour (centres at 60-90%
            of the summed radii); the rest may touch but not overlap. Elongated shapes
            (elliptocytes, sickle cells, teardrop tails) can still overlap a little at 0.
        style: stain/optics/density; None draws a random one from ``seed``.
        overlap_depth: the range of that centre distance, as a fraction of the summed radii
            (lower: deeper overlaps; bcd-256's overlapping pairs reach down to ~0.4).

    Returns:
        A :class:`SynthField` whose ``cells`` hold full (amodal) masks in z order.
    """
    _check_field_type(field_type)
    weights = _check_weights(field_type, label_weights)
    _check_seed(seed)
    if not (_is_int(height) and _is_int(width) and 16 <= height <= 8192 and 16 <= width <= 8192):
        raise MorphError("bad_request", f"height and width must be integers in 16..8192, got {height}x{width}")
    if not (_is_real(um_per_px) and 0.01 <= um_per_px <= 2.0):
        raise MorphError("bad_request", f"um_per_px must be in 0.01..2.0, got {um_per_px!r}")
    if not (_is_real(overlap) and 0.0 <= overlap <= 1.0):
        raise MorphError("bad_request", f"overlap must be in 0..1, got {overlap!r}")
    lo_depth, hi_depth = overlap_depth
    if not (_is_real(lo_depth) and _is_real(hi_depth) and 0.2 <= lo_depth <= hi_depth <= 1.0):
        raise MorphError("bad_request", f"overlap_depth must be (low, high) in 0.2..1.0, got {overlap_depth!r}")
    if n_cells is not None and not (_is_int(n_cells) and 0 <= n_cells <= 20000):
        raise MorphError("bad_request", f"n_cells must be an integer in 0..20000, got {n_cells!r}")
    if style is not None and not isinstance(style, RenderStyle):
        raise MorphError("bad_request", f"style must be a RenderStyle, got {type(style).__name__}")
    stain = FIELD_STAIN[field_type]
    rng = np.random.default_rng(seed)
    style_rng = np.random.default_rng([seed, 1])
    if style is None:
        style = RenderStyle.random(style_rng, stain)

    labels = sorted(weights)
    probs = np.asarray([weights[k] for k in labels], np.float64)
    probs /= probs.sum()
    if n_cells is None:
        scale = style.rbc_diameter_um / 7.5
        mean_area = float(sum(
            pr * math.pi * (0.5 * _DIAM_UM[k] * scale * style.size_scale.get(k, 1.0) / um_per_px) ** 2
            for k, pr in zip(labels, probs, strict=True)))
        n_cells = int(round(style.density * height * width / max(mean_area, 1.0)))
    counts = rng.multinomial(n_cells, probs)
    chosen = [k for k, c in zip(labels, counts, strict=True) for _ in range(int(c))]
    specs = [_make_spec(k, rng, style, um_per_px, stain) for k in chosen]
    # nucleated (big, rare) cells first, red cells in random order (so crowding drops no
    # label preferentially), platelets last in the gaps
    rank = {"nucleated": 0, "rbc": 1, "platelet": 2}
    order = sorted(rng.permutation(len(specs)).tolist(), key=lambda i: rank[specs[i].kind])
    specs = [specs[i] for i in order]
    placed = _place(specs, rng, height, width, overlap, overlap_depth)
    if len(placed) < len(specs):
        log.debug("render_field(seed=%s): placed %d of %d cells", seed, len(placed), len(specs))
    # z order: shuffle so nucleated cells are not always at the bottom
    z = rng.permutation(len(placed))
    placed = [placed[i] for i in z]

    st = _Stain(stain, style)
    od = np.zeros((height, width, 3), np.float32)
    cells: list[SynthCell] = []
    for sp in placed:
        res = _draw(sp, od, st, rng, um_per_px)
        if res is None:
            continue
        mask, bbox = res
        cells.append(_truth(sp, mask, bbox, height, width))
    if style.debris > 0:
        _add_debris(od, style, rng, um_per_px, st)
    light = _illumination(style, height, width)
    if style.mottle > 0:
        light = light * _mottle(rng, height, width, style.mottle)[..., None]
    image = _finish(od, style, rng, um_per_px, light=light)
    return SynthField(image=image, cells=cells, stain=stain, field_type=field_type,
                      um_per_px=float(um_per_px), seed=int(seed), style=style)


def _truth(sp: _Spec, mask: np.ndarray, bbox: tuple[int, int, int, int], h: int, w: int) -> SynthCell:
    x0, y0, x1, y1 = bbox
    area = float(mask.sum())
    ys, xs = np.nonzero(mask)
    # centre: the drawn centre if it falls in the mask, else the mask pixel nearest the centroid
    cx, cy = sp.cx, sp.cy
    ix, iy = int(math.floor(cx)) - x0, int(math.floor(cy)) - y0
    if not (0 <= iy < mask.shape[0] and 0 <= ix < mask.shape[1] and mask[iy, ix]):
        mx, my = xs.mean(), ys.mean()
        k = int(np.argmin((xs - mx) ** 2 + (ys - my) ** 2))
        cx, cy = x0 + xs[k] + 0.5, y0 + ys[k] + 0.5
    touches = x0 == 0 or y0 == 0 or x1 == w or y1 == h
    diam = 2.0 * sp.r if not touches else max(2.0 * sp.r, 2.0 * math.sqrt(area / math.pi))
    if sp.kind == "rbc" and not touches:
        diam = 2.0 * math.sqrt(area / math.pi)
    return SynthCell(x=float(cx), y=float(cy), bbox=bbox, label=sp.label, kind=sp.kind,
                     diameter_px=float(diam), touches_border=bool(touches), mask=mask)


def _place(specs: list[_Spec], rng: np.random.Generator, h: int, w: int, overlap: float,
           depth: tuple[float, float] = (0.6, 0.9), tries: int = 40) -> list[_Spec]:
    """Rejection-sample centres inside the image.

    With probability ``overlap`` a cell is placed overlapping an already placed one (its
    centre at a ``depth`` fraction, 60-90% by default, of the summed radii from that partner's
    centre, half the tries); otherwise cells may touch but not overlap (by their nominal radii).
    """
    xs = np.empty(len(specs))
    ys = np.empty(len(specs))
    rs = np.empty(len(specs))
    n = 0
    out: list[_Spec] = []
    for sp in specs:
        seek = sp.kind != "platelet" and rng.random() < overlap
        f = float(rng.uniform(*depth)) if seek else 1.0
        cand_x = rng.uniform(0, w, tries)
        cand_y = rng.uniform(0, h, tries)
        if seek and n:
            k = tries // 2
            partner = rng.integers(0, n, k)
            ang = rng.uniform(0, 2 * math.pi, k)
            dist = (rs[partner] + sp.r) * f
            cand_x[:k] = xs[partner] + dist * np.cos(ang)
            cand_y[:k] = ys[partner] + dist * np.sin(ang)
        for cx, cy in zip(cand_x, cand_y, strict=True):
            if not (0 <= cx < w and 0 <= cy < h):
                continue
            if n:
                d = np.hypot(xs[:n] - cx, ys[:n] - cy)
                if np.any(d < (rs[:n] + sp.r) * f - 1e-6):
                    continue
            sp.cx, sp.cy = float(cx), float(cy)
            xs[n], ys[n], rs[n] = cx, cy, sp.r
            n += 1
            out.append(sp)
            break
    return out


# ---------------------------------------------------------------------------
# Disease presets: whole cases of several fields
# ---------------------------------------------------------------------------

#: Share of a case's fields covered by cells (RenderStyle.density) in the reading area of a film.
READING_DENSITY: tuple[float, float] = (0.4, 0.55)

#: White cells and platelets of an ordinary blood film (relative to red-cell weights near 1).
_BLOOD_WHITE = {"neutrophil": 0.012, "lymphocyte": 0.008, "monocyte": 0.003, "platelet": 0.06}


@dataclass(frozen=True)
class CasePreset:
    """The blood picture of one condition as the literature describes it, for rendering cases.

    ``label_weights`` are relative frequencies (as in :func:`render_field`); ``size_scale`` makes
    e.g. ovalocytes large (macro-ovalocytes); ``jitter`` (a fraction) varies every abnormal
    weight from case to case so that ten cases are not ten copies of one smear.
    """

    name: str
    field_type: str
    label_weights: Mapping[str, float]
    morphology: str
    source: str
    size_scale: Mapping[str, float] = field(default_factory=dict)
    jitter: float = 0.25


CASE_PRESETS: dict[str, CasePreset] = {p.name: p for p in (
    CasePreset(
        "normal", "blood",
        {"normal": 0.90, "ovalocyte": 0.02, "target_cell": 0.01, "stomatocyte": 0.01,
         "macrocyte": 0.01, "microcyte": 0.01, "teardrop": 0.003, "reticulocyte": 0.01, **_BLOOD_WHITE},
        "normocytic normochromic cells, a few ovalocytes, target cells and stomatocytes, "
        "polychromasia about 1%", "Bain, Blood Cells 5th ed. 2015, ch. 3"),
    CasePreset(
        "myelofibrosis", "blood",
        {"normal": 0.62, "teardrop": 0.15, "ovalocyte": 0.05, "elliptocyte": 0.02, "target_cell": 0.02,
         "microcyte": 0.03, "macrocyte": 0.03, "schistocyte": 0.005, "reticulocyte": 0.02,
         "nucleated_rbc": 0.003, "neutrophil": 0.018, "lymphocyte": 0.006, "monocyte": 0.003,
         "platelet": 0.07},
        "leukoerythroblastic film: many teardrops, anisopoikilocytosis, nucleated red cells, large "
        "platelets (myelocytes cannot be rendered on blood fields)", "Tefferi, Am J Hematol 2023; Bain 2015",
        size_scale={"platelet": 1.6}),
    CasePreset(
        "b12_deficiency", "blood",
        {"normal": 0.50, "ovalocyte": 0.22, "macrocyte": 0.12, "teardrop": 0.03, "schistocyte": 0.008,
         "microcyte": 0.02, "target_cell": 0.01, "nucleated_rbc": 0.001, "neutrophil": 0.014,
         "hypersegmented_neutrophil": 0.002, "lymphocyte": 0.008, "monocyte": 0.003, "platelet": 0.04},
        "macro-ovalocytes, macrocytes, anisopoikilocytosis with some teardrops and fragments, "
        "hypersegmented neutrophils", "Green, Blood 2017; Devalia et al., Br J Haematol 2014",
        size_scale={"ovalocyte": 1.3}),
    CasePreset(
        "mds", "blood",
        {"normal": 0.60, "macrocyte": 0.15, "ovalocyte": 0.08, "teardrop": 0.02, "stomatocyte": 0.02,
         "elliptocyte": 0.02, "nucleated_rbc": 0.001, "neutrophil": 0.010, "lymphocyte": 0.010,
         "monocyte": 0.003, "platelet": 0.03},
        "macrocytes, most of them round and some oval, and anisopoikilocytosis without hypersegmented "
        "neutrophils; neutropenia, thrombocytopenia (dysplastic, hypogranular neutrophils are not rendered)",
        "WHO 2022 (Khoury et al., Leukemia 2022); Bain 2015", size_scale={"ovalocyte": 1.2}),
    CasePreset(
        "parvovirus_crisis", "nmb",
        {"normal": 0.94, "microcyte": 0.02, "macrocyte": 0.02, "spherocyte": 0.02,
         "neutrophil": 0.006, "lymphocyte": 0.004, "platelet": 0.05},
        "new methylene blue preparation with no reticulocytes (transient red-cell aplasia)",
        "Young and Brown, N Engl J Med 2004"),
    CasePreset(
        "beta_thalassaemia_major", "blood",
        {"normal": 0.22, "microcyte": 0.22, "hypochromic": 0.22, "target_cell": 0.15, "teardrop": 0.04,
         "schistocyte": 0.02, "elliptocyte": 0.02, "reticulocyte": 0.02, "nucleated_rbc": 0.02,
         "neutrophil": 0.015, "lymphocyte": 0.01, "monocyte": 0.003, "platelet": 0.05},
        "microcytic hypochromic cells, many target cells, marked poikilocytosis with teardrops and "
        "fragments, many nucleated red cells (basophilic stippling is not rendered)",
        "Taher et al., N Engl J Med 2021; TIF guidelines 2021; Bain 2015",
        size_scale={"hypochromic": 0.85, "target_cell": 0.9}),
    CasePreset(
        "iron_deficiency", "blood",
        {"normal": 0.37, "hypochromic": 0.28, "microcyte": 0.25, "pencil_cell": 0.06,
         "target_cell": 0.02, "elliptocyte": 0.01, "neutrophil": 0.012, "lymphocyte": 0.008,
         "monocyte": 0.003, "platelet": 0.09},
        "microcytic hypochromic cells with pencil cells (long thin elliptocytes), few target cells, "
        "reactive thrombocytosis", "Camaschella, N Engl J Med 2015; Bain 2015",
        size_scale={"hypochromic": 0.9}),
    CasePreset(
        "hereditary_spherocytosis", "blood",
        {"normal": 0.66, "spherocyte": 0.25, "reticulocyte": 0.06, "microcyte": 0.02,
         "target_cell": 0.005, **_BLOOD_WHITE},
        "spherocytes (dense, no central pallor) with polychromasia",
        "Bolton-Maggs et al., Br J Haematol 2012; Perrotta et al., Lancet 2008"),
    CasePreset(
        "hereditary_elliptocytosis", "blood",
        {"normal": 0.43, "elliptocyte": 0.40, "ovalocyte": 0.15, "reticulocyte": 0.01,
         "schistocyte": 0.003, **_BLOOD_WHITE},
        "elliptocytes and ovalocytes of normal size, most of the red cells",
        "Gallagher, Semin Hematol 2004; Bain 2015"),
)}


def render_case(preset: str, seed: int, n_fields: int = 5, *, height: int = 480, width: int = 640,
                um_per_px: float = DEFAULT_UM_PER_PX) -> list[SynthField]:
    """Render one case of ``preset`` (a key of :data:`CASE_PRESETS`): ``n_fields`` fields of one
    slide (one stain look), the abnormal cells' shares varied per case by the preset's jitter.

    Deterministic: the same preset, seed and arguments give the same fields, bit for bit.
    """
    spec = CASE_PRESETS.get(preset)
    if spec is None:
        raise MorphError("bad_request", f"unknown case preset {preset!r}; "
                         f"known: {', '.join(CASE_PRESETS)}", detail={"preset": preset})
    _check_seed(seed)
    if not (_is_int(n_fields) and 1 <= n_fields <= 100):
        raise MorphError("bad_request", f"n_fields must be an integer in 1..100, got {n_fields!r}")
    rng = np.random.default_rng([seed, 13])
    stain = FIELD_STAIN[spec.field_type]
    # fields from the reading area of a film, where red cells just touch (ICSH 2015), as a
    # morphologist picks them: Chula RBC-12 fields hold about 70 whole red cells
    style = replace(RenderStyle.random(rng, stain), size_scale=dict(spec.size_scale),
                    density=float(rng.uniform(*READING_DENSITY)))
    weights = {k: (w if k == "normal" or kind_of(RENDER_VARIANTS.get(k, k)) != "rbc"
                   else w * float(np.exp(rng.normal(0.0, spec.jitter))))
               for k, w in spec.label_weights.items()}
    return [render_field(int(rng.integers(2**31)), field_type=spec.field_type, height=height, width=width,
                         um_per_px=um_per_px, label_weights=weights, style=style)
            for _ in range(n_fields)]


# ---------------------------------------------------------------------------
# Iron-deficiency ring-cell fields: the failure case of real smears from other laboratories
# ---------------------------------------------------------------------------

#: Label mix of a severe iron-deficiency film as other laboratories' fields show it: mostly
#: hypochromic ring cells and microcytes with pencil cells, a white cell only now and then.
RING_FIELD_WEIGHTS: dict[str, float] = {
    "ring_cell": 0.50, "hypochromic": 0.10, "microcyte": 0.12, "pencil_cell": 0.08, "normal": 0.10,
    "target_cell": 0.02, "neutrophil": 0.004, "lymphocyte": 0.003, "platelet": 0.07,
}

#: Cells in a sparse field (the thin end of a film, or a very anaemic one), inclusive.
SPARSE_CELLS: tuple[int, int] = (5, 40)


def render_ring_field(seed: int, *, sparse: bool = False, height: int = 480, width: int = 640,
                      um_per_px: float = DEFAULT_UM_PER_PX) -> SynthField:
    """A blood field of severe iron deficiency (:data:`RING_FIELD_WEIGHTS`): ring cells whose dark,
    violet-tinged rim surrounds a pale centre over more than half the diameter; with ``sparse``
    only 5-40 cells (:data:`SPARSE_CELLS`) on a lot of glass. Ring cells are labelled
    ``hypochromic`` and pencil cells ``elliptocyte`` (:data:`RENDER_VARIANTS`).

    Deterministic: the same seed and arguments give the same field, bit for bit.
    """
    _check_seed(seed)
    rng = np.random.default_rng([seed, 29])
    # iron-deficient films stain fully (the rims are dark): no very pale smears
    style = replace(RenderStyle.random(rng, "wright"), stain_strength=float(rng.uniform(0.8, 1.25)))
    n_cells = int(rng.integers(SPARSE_CELLS[0], SPARSE_CELLS[1] + 1)) if sparse else None
    return render_field(seed, field_type="blood", height=height, width=width, um_per_px=um_per_px,
                        n_cells=n_cells, label_weights=RING_FIELD_WEIGHTS, style=style)


# ---------------------------------------------------------------------------
# Single-cell crops
# ---------------------------------------------------------------------------

_CONTEXT_LABELS = {"wright": ("normal", "normal", "normal", "macrocyte", "microcyte", "target_cell",
                              "ovalocyte", "spherocyte", "hypochromic"),
                   "nmb": ("normal", "normal", "normal", "reticulocyte")}


#: shapes whose mask centroid is far from the drawing centre
_OFF_CENTRE = frozenset({"schistocyte", "teardrop", "sickle_cell"})


def crop_labels(stain: str = "wright") -> tuple[str, ...]:
    """Labels :func:`render_cell_crop` accepts for ``stain``."""
    _check_stain(stain)
    types = [t for t, s in FIELD_STAIN.items() if s == stain]
    out: list[str] = []
    for t in types:
        out += [k for k in SYNTH_LABELS[t] if k not in out]
    return tuple(out)


def _check_crop_args(seed: int, size: int, um_per_px: float) -> None:
    _check_seed(seed)
    if not (_is_int(size) and 8 <= size <= 1024):
        raise MorphError("bad_request", f"size must be an integer in 8..1024, got {size!r}")
    if not (_is_real(um_per_px) and 0.01 <= um_per_px <= 2.0):
        raise MorphError("bad_request", f"um_per_px must be in 0.01..2.0, got {um_per_px!r}")


def render_cell_crop(
    seed: int,
    label: str,
    *,
    stain: str = "wright",
    size: int = 64,
    um_per_px: float = DEFAULT_UM_PER_PX,
    context_cells: bool = True,
    style: RenderStyle | None = None,
    size_scale: float = 1.0,
) -> np.ndarray:
    """One cell of ``label``, centred (jitter under 2 px), in a (size, size, 3) uint8 RGB crop.

    With ``context_cells`` a few red cells are drawn cut by the crop edges, as in crops
    taken from a real field. Deterministic for a seed; stain/optics vary with the seed
    unless ``style`` is given. ``size_scale`` multiplies the centred cell's diameter
    (e.g. 1.3 with ``"ovalocyte"`` for a macro-ovalocyte); neighbours keep their size.
    """
    _check_stain(stain)
    allowed = crop_labels(stain)
    if label not in allowed:
        raise MorphError("bad_request", f"label {label!r} cannot be rendered with stain {stain!r}; "
                         f"renderable: {', '.join(allowed)}", detail={"label": label})
    _check_crop_args(seed, size, um_per_px)
    if not (_is_real(size_scale) and 0.3 <= size_scale <= 3.0):
        raise MorphError("bad_request", f"size_scale must be in 0.3..3.0, got {size_scale!r}")
    rng = np.random.default_rng(seed)
    if style is None:
        style = RenderStyle.random(rng, stain)
    st = _Stain(stain, style)
    od = np.zeros((size, size, 3), np.float32)
    c = 0.5 * size
    main_style = style
    if size_scale != 1.0:
        sizes = dict(style.size_scale)
        sizes[label] = float(sizes.get(label, 1.0)) * float(size_scale)
        main_style = replace(style, size_scale=sizes)
    main = _make_spec(label, rng, main_style, um_per_px, stain)
    main.cx = c + float(rng.uniform(-1.5, 1.5))
    main.cy = c + float(rng.uniform(-1.5, 1.5))
    if label in _OFF_CENTRE:  # centre the mask's centroid, as a localizer's crop would be
        probe = _draw(main, np.zeros((size, size, 3), np.float32), st, np.random.default_rng(0), um_per_px)
        if probe is not None:
            m, (bx0, by0, _, _) = probe
            ys, xs = np.nonzero(m)
            main.cx += main.cx - (bx0 + float(xs.mean()) + 0.5)
            main.cy += main.cy - (by0 + float(ys.mean()) + 0.5)
    specs = _context_specs(rng, style, um_per_px, stain, (main.cx, main.cy, main.r), c) if context_cells else []
    specs.append(main)  # the centred cell on top
    for sp in specs:
        _draw(sp, od, st, rng, um_per_px)
    return _finish_crop(od, style, rng, um_per_px)


def _context_specs(rng: np.random.Generator, style: RenderStyle, um_per_px: float, stain: str,
                   centre: tuple[float, float, float], c: float) -> list[_Spec]:
    """0-4 red cells around an object at ``centre`` (x, y, radius px), as cut from a field; only
    those the crop (half side ``c``) shows at all are kept."""
    cx, cy, r = centre
    specs = []
    for _ in range(int(rng.integers(0, 5))):
        nb = _make_spec(str(rng.choice(_CONTEXT_LABELS[stain])), rng, style, um_per_px, stain)
        a = float(rng.uniform(0, 2 * math.pi))
        dist = (r + nb.r) * float(rng.uniform(0.92, 1.25))
        nb.cx, nb.cy = cx + dist * math.cos(a), cy + dist * math.sin(a)
        if abs(nb.cx - c) - nb.r < c and abs(nb.cy - c) - nb.r < c:  # visible at all
            specs.append(nb)
    return specs


def _finish_crop(od: np.ndarray, style: RenderStyle, rng: np.random.Generator, um_per_px: float) -> np.ndarray:
    """A crop's picture: flat illumination at a drawn gain, then optics and noise."""
    size = od.shape[0]
    gain = float(rng.uniform(0.88, 1.04))
    light = np.broadcast_to(np.asarray(style.background, np.float32) * np.float32(gain), (size, size, 3))
    return _finish(od, style, rng, um_per_px, light=light)


# ---------------------------------------------------------------------------
# Objects that are not cells of the vocabulary (out-of-distribution tests)
# ---------------------------------------------------------------------------

#: What :func:`render_ood_crop` draws: a single platelet, a platelet clump, amorphous debris and
#: stain precipitate. No classifier label fits them; a localizer may still hand them over as cells.
OOD_OBJECTS: tuple[str, ...] = ("platelet", "platelet_clump", "debris", "stain_precipitate")


def _blob(U: np.ndarray, V: np.ndarray, r: float) -> np.ndarray:
    return np.exp(-(U * U + V * V) / np.float32(r * r))


def _platelet_clump(od: np.ndarray, rng: np.random.Generator, st: _Stain, style: RenderStyle,
                    um_per_px: float, c: float) -> float:
    """4-11 platelets heaped within ~2 um of the centre; returns the clump's radius (px)."""
    spread = float(rng.uniform(0.8, 1.6)) / um_per_px
    for _ in range(int(rng.integers(4, 12))):
        sp = _make_spec("platelet", rng, style, um_per_px, st.name)
        sp.cx, sp.cy = c + float(rng.normal(0, spread)), c + float(rng.normal(0, spread))
        _draw(sp, od, st, rng, um_per_px)
    return 2.2 * spread


def _stain_precipitate(od: np.ndarray, rng: np.random.Generator, st: _Stain, style: RenderStyle,
                       um_per_px: float, c: float) -> float:
    """15-70 dark-violet granules (0.15-0.5 um) in an irregular cluster 2-8 um across."""
    size = od.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    spread = float(rng.uniform(0.5, 2.0)) / um_per_px
    elong = float(rng.uniform(1.0, 2.5))
    ang = float(rng.uniform(0, math.pi))
    tone = st.vec["nucleus"] * np.float32(rng.uniform(0.8, 1.3))
    for _ in range(int(rng.integers(15, 71))):
        a, b = rng.normal(0, spread) * elong, rng.normal(0, spread)
        gx = c + a * math.cos(ang) - b * math.sin(ang)
        gy = c + a * math.sin(ang) + b * math.cos(ang)
        r = float(rng.uniform(0.15, 0.5)) / um_per_px
        od += (_blob(xx - np.float32(gx), yy - np.float32(gy), r) * np.float32(rng.uniform(0.6, 1.6)))[..., None] * tone
    return 2.0 * spread * elong


def _debris(od: np.ndarray, rng: np.random.Generator, st: _Stain, style: RenderStyle,
            um_per_px: float, c: float) -> float:
    """An amorphous, textured, lumpy smudge 3-9 um across (cell remnants, dust, fibres of stain)."""
    size = od.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    U, V = xx - np.float32(c), yy - np.float32(c)
    r = float(rng.uniform(1.5, 4.5)) / um_per_px
    th = np.arctan2(V, U)
    four = [(k, float(rng.uniform(0.08, 0.3) / k ** 0.5), float(rng.uniform(0, 2 * math.pi))) for k in range(2, 7)]
    sd = np.hypot(U, V) - r * (1.0 + _fourier(th, four))
    alpha = _edge_alpha(sd, width=float(rng.uniform(0.9, 3.0)))
    tex = np.clip(_tex(rng, float(rng.uniform(0.3, 1.0)) / um_per_px, size, size) + 0.8, 0, None)
    mix = rng.dirichlet((1.0, 1.0, 1.0))
    tone = (mix[0] * np.full(3, 0.55, np.float32) + mix[1] * st.vec["hb"] * 1.5
            + mix[2] * st.vec["nucleus"] * 0.6).astype(np.float32)
    od += (alpha * tex * np.float32(rng.uniform(0.3, 1.1)))[..., None] * tone
    return r * 1.3


_OOD_DRAWERS: dict[str, Any] = {"platelet_clump": _platelet_clump, "stain_precipitate": _stain_precipitate,
                                "debris": _debris}


def render_ood_crop(
    seed: int,
    obj: str,
    *,
    stain: str = "wright",
    size: int = 64,
    um_per_px: float = DEFAULT_UM_PER_PX,
    context_cells: bool = True,
) -> np.ndarray:
    """One object of :data:`OOD_OBJECTS`, centred in a (size, size, 3) uint8 RGB crop, with (by
    default) red cells around it as in a crop cut from a field. Deterministic for a seed."""
    _check_stain(stain)
    if obj not in OOD_OBJECTS:
        raise MorphError("bad_request", f"unknown object {obj!r}; known: {', '.join(OOD_OBJECTS)}", detail={"object": obj})
    if obj == "platelet":
        return render_cell_crop(seed, "platelet", stain=stain, size=size, um_per_px=um_per_px,
                                context_cells=context_cells)
    _check_crop_args(seed, size, um_per_px)
    rng = np.random.default_rng([seed, 17])
    style = RenderStyle.random(rng, stain)
    st = _Stain(stain, style)
    od = np.zeros((size, size, 3), np.float32)
    c = 0.5 * size + float(rng.uniform(-1.5, 1.5))
    r = _OOD_DRAWERS[obj](od, rng, st, style, um_per_px, c)
    if context_cells:
        for sp in _context_specs(rng, style, um_per_px, stain, (c, c, r), 0.5 * size):
            _draw(sp, od, st, rng, um_per_px)
    return _finish_crop(od, style, rng, um_per_px)

