"""Robustness benchmark: localization on clean fields and under controlled shifts (stain, colour,
optics, JPEG, noise, scale, sparse fields, white patches, padding, transparency, mosaics), and
the shipped classifier's per-class accuracy under the stain shifts.

Usage (single core, as the speed targets are stated)::

    taskset -c 0 .venv/bin/python benchmarks/robustness.py --quick     # a few minutes of CPU
    taskset -c 0 .venv/bin/python benchmarks/robustness.py             # the full table

Prints one localization table (a row per shift and severity) and, unless ``--no-classifier``,
one classifier table. Everything is deterministic: the fields are fixed subsets, and every
random shift draws from a seed made of the shift's name and the field's number.

Sets and scoring (the rules of ``benchmarks/localization.py``, from :mod:`morph.evaluation`):
    chula: Chula RBC-12 points; *R* = found / points, *merge* = points sharing a detection;
        *d um* = median diameter (um, at the field's stated scale) of the red cells holding a
        point labelled normal; *cells* = red cells counted relative to the clean field (for
        blank-area shifts: the clean cells outside the blanked part).
    txl: TXL-PBC test red-cell boxes; bcd: bcd-256 red-cell boxes of the held-out test part
        (:func:`morph.evaluation.bcd256_is_test`); rend: rendered blood fields (seeds from 0,
        never used to train locnet); ring: rendered iron-deficiency ring-cell fields, every other
        one sparse (``render_ring_field``). P/R = one-to-one centre-in-box matching of red cells.
    wbc R: recall of the white cells (nucleated detections against the TXL-PBC class-0 and
        bcd-256 ``wbc`` boxes, one to one, centre in box); shown, not part of *worst*: the sets
        hold few of them (TXL 40 fields: ~55, bcd 20: 22), one white cell moves it 2-5%.
    warn: fields (all sets) warned "very dense" or "no cells".
    blur: fields (all sets) warned "out of focus": where a shift costs cells, whether the
        fields say that their counts are less reliable.
    worst: the largest drop of any red-cell P/R (and Chula recall) below its clean value.

Shifts (:mod:`morph.shifts`): points and boxes move with the image (scale, padding); cells whose
centre a blanked patch hides leave the ground truth (and a detection of their visible part, cut
by the patch as by an image edge, is not scored); sparse fields keep a fixed tenth or fifth of the
labelled cells (a disc of 5 um around each kept Chula point, the ellipse in each kept box) and
turn the rest into glass; mosaics tile the chosen Chula fields into 4000x3000 and 7000x7000
images (Chula only: their *d um* is compared with the 640x480 fields).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tqdm import tqdm  # noqa: E402

from morph import shifts  # noqa: E402
from morph.evaluation import (  # noqa: E402
    bcd256_is_test,
    box_matches,
    cell_index_map,
    found_and_merged,
    point_owners,
)
from morph.io import read_image  # noqa: E402
from morph.localize import DEFAULT_LOCALIZER_NAME, CentreDetector, load_localizer  # noqa: E402
from morph.readers import chula_field_points, read_bcd256_boxes, yolo_field_boxes  # noqa: E402
from morph.segment import DEFAULT_UM_PER_PX, Segmentation, segment_field  # noqa: E402
from morph.segment.warnings import warning_code  # noqa: E402

if TYPE_CHECKING:
    from morph.classify import CellClassifier
    from morph.types import Cell


# ----------------------------------------------------------------------------- fields
@dataclass(frozen=True)
class Field:
    """One field and its ground truth: Chula points (x, y, class) or red-cell boxes."""

    set: str
    key: int
    image: np.ndarray
    um_per_px: float
    points: np.ndarray | None = None  # (n, 3) x, y, class
    boxes: np.ndarray | None = None  # (m, 4) x0, y0, x1, y1
    blanked: np.ndarray | None = None  # pixels a shift blanked (clean cells there are not counted)
    hidden: np.ndarray | None = None  # (k, 4) boxes whose centre a shift blanked: detections there are not scored
    wbc: np.ndarray | None = None  # (w, 4) white-cell boxes (TXL-PBC, bcd-256); None: not scored


def chula_fields(root: Path, n: int) -> list[Field]:
    """Every k-th Chula field (by number) so ``n`` fields span the set."""
    paths = sorted((root / "images").glob("*.jpg"), key=lambda p: int(p.stem))
    picked = paths[:: max(1, len(paths) // n)][:n]
    return [Field("chula", int(p.stem), read_image(p), DEFAULT_UM_PER_PX,
                  points=chula_field_points(root / "labels" / f"{p.stem}.txt"))
            for p in picked]


def txl_fields(root: Path, n: int) -> list[Field]:
    """TXL-PBC test fields (every k-th), red-cell boxes (class 1), duplicate rows counted once."""
    paths = sorted((root / "images" / "test").glob("*.jpg"))
    out = []
    for i, p in enumerate(paths[:: max(1, len(paths) // n)][:n]):
        im = read_image(p)
        h, w = im.shape[:2]
        boxes = yolo_field_boxes(root / "labels" / "test" / f"{p.stem}.txt", w, h)
        none = np.zeros((0, 4))
        out.append(Field("txl", i, im, DEFAULT_UM_PER_PX, boxes=boxes.get(1, none), wbc=boxes.get(0, none)))
    return out


def bcd_fields(root: Path, n: int) -> list[Field]:
    """The held-out test part of bcd-256, red-cell and white-cell boxes (scale unpublished: the
    default)."""
    fields, _ = read_bcd256_boxes(root, labels=("rbc", "wbc"))
    return [Field("bcd", f.number, read_image(f.image_path), DEFAULT_UM_PER_PX, boxes=f.boxes["rbc"],
                  wbc=f.boxes["wbc"]) for f in fields if bcd256_is_test(f.number) and len(f.boxes["rbc"])][:n]


def rendered_fields(n: int) -> list[Field]:
    from morph.synth import render_field

    out = []
    for seed in range(n):
        f = render_field(seed, field_type="blood")
        b = np.array([c.bbox for c in f.cells if c.kind == "rbc"], float).reshape(-1, 4)
        out.append(Field("rend", seed, f.image, f.um_per_px, boxes=b))
    return out


def ring_fields(n: int) -> list[Field]:
    """Rendered iron-deficiency ring-cell fields (``render_ring_field``), every other one sparse
    (5-40 cells): the failure case of real smears from other laboratories."""
    from morph.synth import render_ring_field

    out = []
    for seed in range(n):
        f = render_ring_field(seed, sparse=seed % 2 == 1)
        b = np.array([c.bbox for c in f.cells if c.kind == "rbc"], float).reshape(-1, 4)
        out.append(Field("ring", seed, f.image, f.um_per_px, boxes=b))
    return out


# ----------------------------------------------------------------------------- shifts
def _seed(name: str, f: Field) -> int:
    return zlib.crc32(f"{name}/{f.set}/{f.key}".encode())


def _image_only(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Field, str], Field]:
    return lambda f, name: replace(f, image=fn(f.image))


def _seeded(fn: Callable[[np.ndarray, int], np.ndarray]) -> Callable[[Field, str], Field]:
    return lambda f, name: replace(f, image=fn(f.image, _seed(name, f)))


def _scaled(factor: float) -> Callable[[Field, str], Field]:
    def go(f: Field, name: str) -> Field:
        im = shifts.rescale(f.image, factor)
        sx, sy = im.shape[1] / f.image.shape[1], im.shape[0] / f.image.shape[0]
        pts = None if f.points is None else f.points * np.array([sx, sy, 1.0])
        boxes = None if f.boxes is None else f.boxes * np.array([sx, sy, sx, sy])
        wbc = None if f.wbc is None else f.wbc * np.array([sx, sy, sx, sy])
        return replace(f, image=im, um_per_px=f.um_per_px / factor, points=pts, boxes=boxes, wbc=wbc)
    return go


def _outside(f: Field, blank: np.ndarray) -> Field:
    """The ground truth whose centres lie outside the blanked pixels, and the boxes whose centre
    is blanked (the visible part of such a cell, cut by the patch as by an image edge, is
    neither a hit nor a false detection), as ``f``'s ground truth (white cells: those whose
    centre is not blanked)."""
    h, w = blank.shape

    def keep(xy: np.ndarray) -> np.ndarray:
        xi = np.clip(xy[:, 0].astype(int), 0, w - 1)
        yi = np.clip(xy[:, 1].astype(int), 0, h - 1)
        return ~blank[yi, xi]

    pts = None if f.points is None else f.points[keep(f.points[:, :2])]
    boxes = hidden = None
    if f.boxes is not None:
        c = _centres(f.boxes)
        boxes, hidden = f.boxes[keep(c)], f.boxes[~keep(c)]
    wbc = None if f.wbc is None else f.wbc[keep(_centres(f.wbc))]
    return replace(f, points=pts, boxes=boxes, hidden=hidden, wbc=wbc, blanked=blank)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def _patch(fraction: float, value: int) -> Callable[[Field, str], Field]:
    def go(f: Field, name: str) -> Field:
        blank = shifts.corner_box(f.image.shape, fraction)
        return replace(_outside(f, blank), image=shifts.fill_region(f.image, blank, (value,) * 3))
    return go


def _transparent(fraction: float) -> Callable[[Field, str], Field]:
    def go(f: Field, name: str) -> Field:
        blank = shifts.corner_box(f.image.shape, fraction)
        return replace(_outside(f, blank), image=shifts.with_transparency(f.image, blank))
    return go


def _padded(fraction: float) -> Callable[[Field, str], Field]:
    def go(f: Field, name: str) -> Field:
        wd = int(round(fraction * max(f.image.shape[:2])))
        pts = None if f.points is None else f.points + np.array([wd, wd, 0.0])
        boxes = None if f.boxes is None else f.boxes + wd
        wbc = None if f.wbc is None else f.wbc + wd
        return replace(f, image=shifts.pad(f.image, wd), points=pts, boxes=boxes, wbc=wbc)
    return go


def _sparse(keep_fraction: float) -> Callable[[Field, str], Field]:
    """Keep a fixed fraction of the labelled cells, turn everything else into glass."""
    def go(f: Field, name: str) -> Field:
        rng = np.random.default_rng(_seed(name, f))
        h, w = f.image.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        keep = np.zeros((h, w), bool)
        n = len(f.points if f.points is not None else f.boxes)
        chosen = np.sort(rng.permutation(n)[: max(1, int(round(keep_fraction * n)))]) if n else np.zeros(0, int)
        if f.points is not None:
            r = 5.0 / f.um_per_px
            for x, y, _ in f.points[chosen]:
                keep |= (xx - x) ** 2 + (yy - y) ** 2 <= r * r
            pts, boxes = f.points[chosen], None
        else:
            assert f.boxes is not None
            for x0, y0, x1, y1 in f.boxes[chosen]:
                cx, cy, ax, ay = (x0 + x1) / 2, (y0 + y1) / 2, max((x1 - x0) / 2, 1), max((y1 - y0) / 2, 1)
                keep |= ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
            pts, boxes = None, f.boxes[chosen]
        # the white cells became glass with the rest: no white-cell recall on sparse fields
        return replace(f, image=shifts.replace_with_glass(f.image, ~keep, _seed(name, f)), points=pts, boxes=boxes,
                       wbc=None)
    return go


@dataclass(frozen=True)
class Shift:
    name: str
    apply: Callable[[Field, str], Field]
    stain_only: bool = False  # a pure colour/optics change: also run on classifier crops
    same_cells: bool = True  # the field keeps its cells (outside a blanked part): counts compare


def _stain(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Shift:
    return Shift(name, _image_only(fn), stain_only=True)


SHIFTS: tuple[Shift, ...] = (
    Shift("clean", lambda f, name: f, stain_only=True),
    _stain("stain hue +10 deg", lambda im: shifts.rotate_stain_hue(im, 10)),
    _stain("stain hue +20 deg", lambda im: shifts.rotate_stain_hue(im, 20)),
    _stain("stain hue -20 deg", lambda im: shifts.rotate_stain_hue(im, -20)),
    _stain("white balance warm", lambda im: shifts.white_balance(im, (1.08, 1.0, 0.9))),
    _stain("white balance cool", lambda im: shifts.white_balance(im, (0.9, 1.0, 1.08))),
    _stain("white balance green", lambda im: shifts.white_balance(im, (0.92, 1.06, 0.92))),
    _stain("saturation x0.6", lambda im: shifts.adjust_saturation(im, 0.6)),
    _stain("saturation x1.4", lambda im: shifts.adjust_saturation(im, 1.4)),
    _stain("stain OD x0.5", lambda im: shifts.scale_stain(im, 0.5)),
    _stain("stain OD x0.7", lambda im: shifts.scale_stain(im, 0.7)),
    _stain("stain OD x1.5", lambda im: shifts.scale_stain(im, 1.5)),
    _stain("brightness x0.8", lambda im: shifts.adjust_brightness_gamma(im, brightness=0.8)),
    _stain("brightness x1.15", lambda im: shifts.adjust_brightness_gamma(im, brightness=1.15)),
    _stain("gamma 0.7", lambda im: shifts.adjust_brightness_gamma(im, gamma=0.7)),
    _stain("gamma 1.4", lambda im: shifts.adjust_brightness_gamma(im, gamma=1.4)),
    _stain("defocus sigma 1 px", lambda im: shifts.defocus(im, 1.0)),
    _stain("defocus sigma 2 px", lambda im: shifts.defocus(im, 2.0)),
    _stain("defocus sigma 3 px", lambda im: shifts.defocus(im, 3.0)),
    _stain("JPEG quality 50", lambda im: shifts.jpeg_round_trip(im, 50)),
    _stain("JPEG quality 30", lambda im: shifts.jpeg_round_trip(im, 30)),
    Shift("noise sigma 4", _seeded(lambda im, s: shifts.add_sensor_noise(im, 4.0, s)), stain_only=True),
    Shift("noise sigma 8", _seeded(lambda im, s: shifts.add_sensor_noise(im, 8.0, s)), stain_only=True),
    Shift("noise sigma 16", _seeded(lambda im, s: shifts.add_sensor_noise(im, 16.0, s)), stain_only=True),
    Shift("scale x0.5", _scaled(0.5)),
    Shift("scale x0.75", _scaled(0.75)),
    Shift("scale x1.5", _scaled(1.5)),
    Shift("scale x2", _scaled(2.0)),
    Shift("sparse: keep 20%", _sparse(0.2), same_cells=False),
    Shift("sparse: keep 10%", _sparse(0.1), same_cells=False),
    Shift("white patch 2% (255)", _patch(0.02, 255)),
    Shift("white patch 2% (240)", _patch(0.02, 240)),
    Shift("white patch 10% (250)", _patch(0.10, 250)),
    Shift("white padding 10%", _padded(0.10)),
    Shift("transparent 10% (RGBA)", _transparent(0.10)),
)

MOSAICS: tuple[tuple[str, int, int], ...] = (("mosaic 4000x3000", 3000, 4000), ("mosaic 7000x7000", 7000, 7000))


# ----------------------------------------------------------------------------- scoring
@dataclass
class Tally:
    """Sums over the fields of one set under one shift."""

    tp: int = 0
    dets: int = 0
    gt: int = 0
    found: int = 0
    merged: int = 0
    cells: int = 0
    clean_cells: int = 0
    warned: int = 0
    blurred: int = 0  # fields warned out of focus
    normal_d_um: list[float] | None = None
    wbc_found: int = 0
    wbc_gt: int | None = None  # None: the set has no white-cell boxes

    def add(self, f: Field, seg: Segmentation, clean_centres: np.ndarray | None) -> None:
        rbc = [c for c in seg.cells if c.kind == "rbc"]
        codes = {warning_code(w) for w in seg.warnings}
        self.warned += bool(codes & {"very_dense", "no_cells"})
        self.blurred += "out_of_focus" in codes
        self.cells += len(rbc)
        if clean_centres is not None:
            cc = clean_centres
            if f.blanked is not None and len(cc):
                h, w = f.blanked.shape
                cc = cc[~f.blanked[np.clip(cc[:, 1].astype(int), 0, h - 1), np.clip(cc[:, 0].astype(int), 0, w - 1)]]
            self.clean_cells += len(cc)
        if f.points is not None:
            owners = point_owners(f.points[:, :2], cell_index_map(seg_shape(f), seg.cells))
            fd, mg = found_and_merged(owners)
            self.found, self.merged, self.gt = self.found + fd, self.merged + mg, self.gt + len(owners)
            normal = [seg.cells[o].diameter_px * f.um_per_px for o, c in zip(owners, f.points[:, 2], strict=True)
                      if o >= 0 and int(c) == 0]
            self.normal_d_um = (self.normal_d_um or []) + normal
        else:
            assert f.boxes is not None
            m, nd, ng = box_matches(_scored(seg.cells, f.hidden), f.boxes)
            self.tp, self.dets, self.gt = self.tp + m, self.dets + nd, self.gt + ng
        if f.wbc is not None:
            m, _, ng = box_matches(seg.cells, f.wbc, ("nucleated",))
            self.wbc_found, self.wbc_gt = self.wbc_found + m, (self.wbc_gt or 0) + ng

    def metrics(self) -> dict[str, float]:
        out = {"warn": float(self.warned), "blur": float(self.blurred)}
        if self.normal_d_um is not None:
            out.update(R=self.found / max(self.gt, 1), merge=self.merged / max(self.gt, 1),
                       d_um=float(np.median(self.normal_d_um)) if self.normal_d_um else math.nan)
        else:
            out.update(P=self.tp / max(self.dets, 1), R=self.tp / max(self.gt, 1))
        if self.clean_cells:
            out["cells"] = self.cells / self.clean_cells
        if self.wbc_gt:
            out["wbc R"] = self.wbc_found / self.wbc_gt
        return out


def _scored(cells: list[Cell], hidden: np.ndarray | None) -> list[Cell]:
    """The cells whose centre lies in no ``hidden`` box (a cell whose centre a patch hides)."""
    if hidden is None or not len(hidden):
        return cells
    return [c for c in cells if not ((hidden[:, 0] <= c.x) & (c.x <= hidden[:, 2])
                                     & (hidden[:, 1] <= c.y) & (c.y <= hidden[:, 3])).any()]


def seg_shape(f: Field) -> tuple[int, int]:
    return int(f.image.shape[0]), int(f.image.shape[1])


def run_shift(shift: Shift, fields: list[Field], loc: CentreDetector | None,
              clean: dict[tuple[str, int], np.ndarray]) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for f in fields:
        g = shift.apply(f, shift.name)
        seg = segment_field(g.image, um_per_px=g.um_per_px, centres=loc)
        centres = np.array([(c.x, c.y) for c in seg.cells if c.kind == "rbc"], float).reshape(-1, 2)
        if shift.name == "clean":
            clean[(f.set, f.key)] = centres
        counts = clean.get((f.set, f.key)) if shift.same_cells else None
        tallies.setdefault(f.set, Tally()).add(g, seg, counts)
    return tallies


def run_mosaic(name: str, height: int, width: int, chula: list[Field], loc: CentreDetector | None) -> dict[str, Tally]:
    tiles = [f for f in chula if f.image.shape[:2] == (480, 640)]
    if not tiles:
        return {}
    img, placed = shifts.mosaic([f.image for f in tiles], height, width)
    pts = []
    for i, y0, x0 in placed:
        p = tiles[i].points + np.array([x0, y0, 0.0])
        inside = (p[:, 0] < width - 0.5) & (p[:, 1] < height - 0.5)
        pts.append(p[inside])
    big = Field("chula", -1, img, DEFAULT_UM_PER_PX, points=np.concatenate(pts))
    seg = segment_field(big.image, um_per_px=big.um_per_px, centres=loc)
    t = Tally()
    t.add(big, seg, None)
    return {"chula": t}


# ----------------------------------------------------------------------------- table
COLUMNS = (("chula", "R"), ("chula", "merge"), ("chula", "d_um"), ("chula", "cells"),
           ("txl", "P"), ("txl", "R"), ("bcd", "P"), ("bcd", "R"), ("rend", "P"), ("rend", "R"),
           ("ring", "P"), ("ring", "R"), ("txl", "wbc R"), ("bcd", "wbc R"))


def _worst_drop(row: dict[str, dict[str, float]], clean: dict[str, dict[str, float]]) -> tuple[float, str]:
    """The largest fall of a precision or recall from its clean value, and which it is ("bcd R")."""
    drops = [(clean[s][k] - row[s][k], f"{s} {k}") for s in row for k in ("P", "R") if k in row[s] and s in clean]
    if not drops:
        return math.nan, "-"
    drop, which = max(drops)
    return drop, which if drop > 0 else "-"  # nothing fell (the clean row itself)


def print_table(rows: list[tuple[str, dict[str, dict[str, float]]]]) -> None:
    head = "".join(f"{s + ' ' + k:>11}" for s, k in COLUMNS)
    print(f"{'shift':<24}{head}{'warn':>6}{'blur':>6}{'worst':>8}{'of':>10}")
    clean = rows[0][1]
    for name, row in rows:
        cells = []
        for s, k in COLUMNS:
            v = row.get(s, {}).get(k)
            cells.append(f"{'-':>11}" if v is None or math.isnan(v) else f"{v:>11.3f}")
        warn, blur = (int(sum(m.get(key, 0) for m in row.values())) for key in ("warn", "blur"))
        drop, which = _worst_drop(row, clean)
        print(f"{name:<24}{''.join(cells)}{warn:>6}{blur:>6}{drop:>8.3f}{which:>10}")


# ----------------------------------------------------------------------------- classifier
STAIN_SHIFTS: tuple[Shift, ...] = tuple(s for s in SHIFTS if s.stain_only)  # "clean" first


def chula_labels() -> dict[int, str]:
    """Chula class number -> morph label (training/mappings/chula.yaml)."""
    from morph.io import read_yaml

    return {int(k): v for k, v in read_yaml(REPO / "training" / "mappings" / "chula.yaml")["classes"].items()}


def val_stems(model_folder: Path) -> list[int]:
    """The Chula image numbers of a model folder's validation split (its split.json)."""
    from morph.data import val_image_stems
    from morph.io import read_json

    return sorted(int(s) for s in val_image_stems(read_json(Path(model_folder) / "split.json")))


def chula_val_fields(chula_root: Path, stems: list[int], n_images: int | None = None) -> list[Field]:
    """The labelled Chula fields of the given image numbers (the first ``n_images`` of them)."""
    return [Field("chula", s, read_image(chula_root / "images" / f"{s}.jpg"), DEFAULT_UM_PER_PX,
                  points=chula_field_points(chula_root / "labels" / f"{s}.txt"))
            for s in stems[:n_images]]


def field_crops(clf: CellClassifier, fields: list[Field], labels: dict[int, str]) -> tuple[np.ndarray, list[str]]:
    """One crop per labelled point of the fields at the model's scale, and the points' true labels."""
    from morph.classify import extract_crops

    crops = [extract_crops(f.image, f.points[:, :2], f.um_per_px, clf.preprocessing) for f in fields
             if f.points is not None]
    s = clf.preprocessing.crop_size
    truth = [labels[int(c)] for f in fields if f.points is not None for c in f.points[:, 2]]
    return (np.concatenate(crops) if crops else np.zeros((0, s, s, 3), np.uint8)), truth


def classifier_shift_metrics(models: Sequence[CellClassifier], fields: list[Field]
                             ) -> list[list[tuple[str, dict[str, Any]]]]:
    """For each model, ``(shift name, classification metrics)`` on the crops of ``fields`` clean
    (first) and under each stain shift; every shifted field is made once and cut for every model."""
    from morph.evaluation import classification_metrics
    from morph.labels import kind_of

    labels = chula_labels()
    out: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in models]
    for shift in STAIN_SHIFTS:
        shifted = [shift.apply(f, shift.name) for f in fields]
        for rows, clf in zip(out, models, strict=True):
            crops, truth = field_crops(clf, shifted, labels)
            pred = clf.predict_crops(crops, [kind_of(t) for t in truth], "wright")
            rows.append((shift.name, classification_metrics(truth, pred.raw_labels, pred.confidences, list(clf.labels))))
    return out


def print_classifier_table(clf: CellClassifier, n_fields: int, rows: list[tuple[str, dict[str, Any]]]) -> None:
    """Accuracy, its change from clean, macro-F1 and per-class recall under each stain shift."""
    labels = list(rows[0][1]["confusion_matrix"]["true_labels"])
    print(f"\nclassifier {clf.name} {clf.version}: Chula val crops ({n_fields} fields, {rows[0][1]['n']} crops); "
          "accuracy, its change from clean, macro-F1 and per-class recall")
    print(f"{'shift':<24}{'acc':>7}{'d acc':>7}{'mF1':>7}" + "".join(f"{lab[:6]:>7}" for lab in labels))
    acc0 = rows[0][1]["accuracy"]
    for name, m in rows:
        per = "".join(f"{m['per_class'].get(lab, {}).get('recall', 0.0):>7.3f}" for lab in labels)
        print(f"{name:<24}{m['accuracy']:>7.3f}{m['accuracy'] - acc0:>+7.3f}{m['macro_f1']:>7.3f}{per}")


def classifier_table(chula_root: Path, n_images: int | None, clf: CellClassifier | None = None) -> None:
    """Per-class recall (accuracy within each true class) of a classifier (default: the shipped
    one) on the Chula validation crops (the model's own split.json), clean and under each stain shift."""
    from morph.classify import load_model

    clf = clf or load_model(None)
    fields = chula_val_fields(chula_root, val_stems(Path(str(clf.folder))), n_images)
    print_classifier_table(clf, len(fields), classifier_shift_metrics([clf], fields)[0])


# ----------------------------------------------------------------------------- main
def get_args_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("MORPH_DATA_DIR", REPO.parent / "shared" / "data")),
                    help="shared data dir (default: $MORPH_DATA_DIR or ../shared/data)")
    ap.add_argument("--quick", action="store_true", help="small subsets (a few minutes of CPU), 4000x3000 mosaic only")
    ap.add_argument("--fields", type=int, default=None, help="fields per set (default 40, --quick 6)")
    ap.add_argument("--shifts", default=None, help="comma list of shift-name prefixes to run (clean always runs)")
    ap.add_argument("--localizer", default="shipped", help=f"'shipped' (models/{DEFAULT_LOCALIZER_NAME}), 'none' (hand-made seeds) or a folder")
    ap.add_argument("--no-classifier", action="store_true", help="skip the classifier table")
    ap.add_argument("--no-mosaics", action="store_true")
    return ap


def load_sets(data: Path, n: int, quick: bool) -> list[Field]:
    fields: list[Field] = []
    loaders = (("chula-rbc-12", lambda r: chula_fields(r, n)), ("txl-pbc", lambda r: txl_fields(r, n)),
               ("bcd-256", lambda r: bcd_fields(r, n)))
    for folder, load in loaders:
        if (data / folder).is_dir():
            fields += load(data / folder)
        else:
            print(f"skip {folder}: not found under {data}")
    n_rendered = max(2, n // 2) if quick else n
    return fields + rendered_fields(n_rendered) + ring_fields(n_rendered)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    loc = None if args.localizer == "none" else load_localizer(None if args.localizer == "shipped" else args.localizer)
    n = args.fields or (6 if args.quick else 40)
    t0 = time.perf_counter()
    fields = load_sets(args.data, n, args.quick)
    wanted = None if args.shifts is None else [s.strip() for s in args.shifts.split(",") if s.strip()]
    print(f"localizer: {loc.name + ' ' + loc.version if loc else 'hand-made seeds'}; fields per set: "
          + ", ".join(f"{s} {sum(f.set == s for f in fields)}" for s in ("chula", "txl", "bcd", "rend", "ring")))
    clean: dict[tuple[str, int], np.ndarray] = {}
    rows = []
    planned = [s for s in SHIFTS if s.name == "clean" or wanted is None or s.name.startswith(tuple(wanted))]
    mosaics = [] if args.no_mosaics else [m for m in (MOSAICS[:1] if args.quick else MOSAICS)
                                          if wanted is None or m[0].startswith(tuple(wanted))]
    # the table prints at the end (20 min for a full run): the bar shows where it is (stderr, a terminal only)
    with tqdm(total=len(planned) + len(mosaics), desc="robustness", unit="shift", disable=None) as bar:
        for shift in planned:
            bar.set_postfix_str(shift.name)
            tallies = run_shift(shift, fields, loc, clean)
            rows.append((shift.name, {s: t.metrics() for s, t in tallies.items()}))
            bar.update()
        chula = [f for f in fields if f.set == "chula"]
        for name, h, w in mosaics:
            bar.set_postfix_str(name)
            rows.append((name, {s: t.metrics() for s, t in run_mosaic(name, h, w, chula, loc).items()}))
            bar.update()
    print_table(rows)
    if not args.no_classifier and (args.data / "chula-rbc-12").is_dir():
        classifier_table(args.data / "chula-rbc-12", 10 if args.quick else None)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
