"""Classification metrics, calibration and threshold tuning (numpy only, no plotting state).

``classification_metrics`` gives the ``metrics.json`` shape shared by training,
``morph evaluate`` and the benchmark: ``accuracy``, ``macro_f1``, ``per_class``
(precision, recall, f1, support), ``ece`` and a ``confusion_matrix``. Macro-F1
averages the labels that occur in the ground truth.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .labels import UNIDENTIFIED
from .types import Cell

if TYPE_CHECKING:  # the classifier (torch) is imported only where a model is evaluated
    from .classify import CellClassifier
    from .readers import LabelledCrop, LabelledData, LabelledPoint
    from .synth import SynthCell


def match_centres_in_boxes(dets: np.ndarray, boxes: np.ndarray) -> int:
    """Number of one-to-one matches of detection centres ``(n, 2)`` (x, y) to boxes
    ``(m, 4)`` (x0, y0, x1, y1): a detection may match a box when its centre lies inside it
    (Hungarian assignment on the centre distance normalised by the box size)."""
    from scipy.optimize import linear_sum_assignment

    if len(dets) == 0 or len(boxes) == 0:
        return 0
    x, y = dets[:, 0:1], dets[:, 1:2]
    inside = (x >= boxes[:, 0]) & (x < boxes[:, 2]) & (y >= boxes[:, 1]) & (y < boxes[:, 3])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    sz = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cost = np.where(inside, np.hypot(x - cx, y - cy) / np.maximum(sz, 1e-9), 1e6)
    ri, ci = linear_sum_assignment(cost)
    return int(inside[ri, ci].sum())


def cell_index_map(shape: tuple[int, int], cells: Iterable[Cell], kinds: Collection[str] = ("rbc",)) -> np.ndarray:
    """Full-resolution map of each pixel's detected cell: its index in ``cells`` plus one
    (0: no cell of one of ``kinds`` there)."""
    out = np.zeros(shape, dtype=np.int32)
    for i, c in enumerate(cells):
        if c.kind not in kinds or c.mask is None:
            continue
        x0, y0, x1, y1 = c.bbox
        out[y0:y1, x0:x1][c.mask] = i + 1
    return out


def point_owners(points: np.ndarray, index_map: np.ndarray) -> np.ndarray:
    """For labelled points ``(n, 2)`` (x, y): the index of the detected cell whose mask holds
    each (-1: none), read from a :func:`cell_index_map`. Points are clipped into the image."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    h, w = index_map.shape
    xi = np.clip(np.rint(pts[:, 0]).astype(np.intp), 0, w - 1)
    yi = np.clip(np.rint(pts[:, 1]).astype(np.intp), 0, h - 1)
    return index_map[yi, xi].astype(np.int64) - 1


def found_and_merged(owners: np.ndarray) -> tuple[int, int]:
    """Chula rule: a point is *found* when it falls alone inside one detected cell; points
    sharing a detection are *merged* (every point of such a cell counts)."""
    own = np.asarray(owners)
    own = own[own >= 0]
    if own.size == 0:
        return 0, 0
    _, counts = np.unique(own, return_counts=True)
    return int((counts == 1).sum()), int(counts[counts >= 2].sum())


def box_matches(cells: Iterable[Cell], boxes: np.ndarray, kinds: Collection[str] = ("rbc",)) -> tuple[int, int, int]:
    """(matched, detections, boxes) of the cells of ``kinds`` against ground-truth boxes
    ``(m, 4)`` (x0, y0, x1, y1), one to one, centre in box (:func:`match_centres_in_boxes`)."""
    dets = np.array([(c.x, c.y) for c in cells if c.kind in kinds], dtype=float).reshape(-1, 2)
    gt = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return match_centres_in_boxes(dets, gt), len(dets), len(gt)


#: bcd-256 images held out for testing: those whose number (``image-<n>.png``) is a multiple of
#: this (20 of the 60 fields). Training may use the others, never these.
BCD256_TEST_EVERY = 3


def bcd256_is_test(image_number: int) -> bool:
    """Whether bcd-256 field ``image-<image_number>.png`` belongs to the held-out test part."""
    return int(image_number) % BCD256_TEST_EVERY == 0


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins (the usual 15-bin definition)."""
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(ok[sel].mean() - conf[sel].mean())
    return float(ece)


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    confidences: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    raw_pred: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per-class precision/recall/F1/support, accuracy, macro-F1, ECE, confusion matrix.

    ``y_pred`` may contain ``unidentified`` (counted as wrong, and as no class's false
    positive); ``raw_pred`` (arg-max before thresholding), when given, is used for ECE.
    """
    t = list(y_true)
    p = list(y_pred)
    if len(t) != len(p):
        raise ValueError("y_true and y_pred differ in length")
    present = sorted(set(t), key=lambda s: (labels.index(s) if labels and s in labels else 999, s))
    extra = sorted({x for x in p if x not in present}, key=lambda s: (s == UNIDENTIFIED, s))
    order = list(present) + extra
    per_class: dict[str, dict[str, float]] = {}
    ta, pa = np.array(t, dtype=object), np.array(p, dtype=object)
    for lab in order:
        tp = int(np.sum((pa == lab) & (ta == lab)))
        fp = int(np.sum((pa == lab) & (ta != lab)))
        fn = int(np.sum((pa != lab) & (ta == lab)))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        if lab == UNIDENTIFIED:
            continue
        per_class[lab] = {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4), "support": tp + fn}
    n = len(t)
    acc = float(np.mean(ta == pa)) if n else 0.0
    macro = float(np.mean([per_class[lab]["f1"] for lab in present])) if present else 0.0
    idx = {lab: i for i, lab in enumerate(order)}
    cm = np.zeros((len(present), len(order)), dtype=np.int64)
    for a, b in zip(t, p, strict=True):
        cm[idx[a], idx[b]] += 1
    out: dict[str, Any] = {
        "n": n,
        "accuracy": round(acc, 4),
        "macro_f1": round(macro, 4),
        "per_class": per_class,
        "confusion_matrix": {"true_labels": present, "pred_labels": order, "matrix": cm.tolist()},
    }
    if confidences is not None and n:
        ref = np.array(list(raw_pred) if raw_pred is not None else p, dtype=object)
        out["ece"] = round(expected_calibration_error(np.asarray(confidences), ref == ta), 4)
        out["unidentified_fraction"] = round(float(np.mean(pa == UNIDENTIFIED)), 4)
    return out


def fit_temperature(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Temperature minimising the negative log-likelihood (golden-section search on log T)."""
    z = np.asarray(logits, dtype=np.float64)
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    y = np.asarray(targets, dtype=np.int64)

    def nll(log_t: float) -> float:
        s = z / np.exp(log_t)
        s = s - s.max(axis=1, keepdims=True)
        lse = np.log(np.exp(s).sum(axis=1))
        return float(np.mean(lse - s[np.arange(len(y)), y]))

    lo, hi = np.log(0.05), np.log(20.0)
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))


def tune_global_threshold(
    y_true: Sequence[str], raw_pred: Sequence[str], confidences: np.ndarray, max_reject: float = 0.05
) -> float:
    """The confidence threshold that maximises macro-F1 on validation, rejecting at most
    ``max_reject`` of the cells (rejected cells count as wrong, never as a false positive)."""
    conf = np.asarray(confidences, dtype=np.float64)
    t = list(y_true)
    best_t, best_f = 0.0, classification_metrics(t, raw_pred)["macro_f1"]
    cap = float(np.quantile(conf, max_reject)) if len(conf) else 0.0
    for thr in np.unique(np.round(np.linspace(0.0, cap, 41), 3)):
        pred = [r if c >= thr else UNIDENTIFIED for r, c in zip(raw_pred, conf, strict=True)]
        f = classification_metrics(t, pred)["macro_f1"]
        if f > best_f + 1e-6:
            best_t, best_f = float(thr), f
    return best_t


def confusion_png(matrix: Sequence[Sequence[int]], true_labels: Sequence[str], pred_labels: Sequence[str], title: str = "") -> bytes:
    """Render a row-normalised confusion matrix as PNG bytes (matplotlib, Agg backend)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(matrix, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(pred_labels), 1.0 + 0.45 * len(true_labels)), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(pred_labels)), pred_labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(true_labels)), true_labels, fontsize=8)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# evaluating a model on labelled data (used by ``morph evaluate`` and the benchmark)
# --------------------------------------------------------------------------------------------
def _val_stems(clf: CellClassifier) -> set[str] | None:
    """Image stems of the model's validation split, from ``split.json`` next to its weights."""
    folder = getattr(clf, "folder", None)
    if folder is None:
        return None
    from pathlib import Path

    from .data import val_image_stems
    from .io import read_json

    p = Path(folder) / "split.json"
    if not p.is_file():
        return None
    return val_image_stems(read_json(p))


@dataclass
class _Scored:
    """Every labelled cell scored so far: its true label, the model's top label before and after
    the confidence thresholds (``missed`` for a point no detected cell matched), the confidence,
    and the items skipped on the way (``path: why``)."""

    skipped: list[str]
    y_true: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    final: list[str] = field(default_factory=list)
    conf: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, truth: str, raw: str, final: str, conf: float) -> None:
        self.y_true.append(truth)
        self.raw.append(raw)
        self.final.append(final)
        self.conf.append(conf)


def evaluate_labelled(
    clf: CellClassifier,
    data: LabelledData,
    *,
    mode: str = "points",
    split: str = "all",
    um_per_px: float | None = None,
    stain: str = "wright",
) -> dict[str, Any]:
    """Metrics of ``clf`` on labelled data (:class:`morph.readers.LabelledData`).

    ``points``: classify the crop at every labelled point (kind from the label).
    ``pipeline``: localise cells with the full pipeline, match each labelled point to
    the nearest detected cell centre within half a normal red-cell diameter (3.75 um),
    and count an unmatched point as ``missed``.
    """
    from .errors import MorphError
    from .segment import DEFAULT_UM_PER_PX

    um = float(um_per_px or DEFAULT_UM_PER_PX)
    points, crops = _in_split(clf, data, split)
    scored = _Scored(skipped=[f"{i.path}: {i.message}" for i in data.issues])
    if mode == "points":
        _score_crops(clf, points, crops, um, stain, scored)
    elif mode == "pipeline":
        if not points:
            raise MorphError("bad_request", "--mode pipeline needs point or box labels on whole fields", path=data.root)
        _score_fields(clf, points, um, stain, scored)
    else:
        raise MorphError("bad_request", f"unknown mode {mode!r}; use points or pipeline")
    if not scored.y_true:
        raise MorphError("empty_dataset", "no labelled cell could be evaluated", path=data.root, detail=scored.skipped[:10])
    return _labelled_metrics(clf, scored, mode, split)


def _in_split(clf: CellClassifier, data: LabelledData, split: str) -> tuple[list[LabelledPoint], list[LabelledCrop]]:
    """The labelled points and crops to evaluate: all, or (``val``) those of images in the
    model's validation split."""
    from pathlib import Path

    from .errors import MorphError

    points = list(data.points)
    crops = list(data.crops)
    if split == "val":
        stems = _val_stems(clf)
        if stems is None:
            raise MorphError("bad_request", "--split val needs a model folder with split.json", path=str(getattr(clf, "folder", clf.name)))
        points = [p for p in points if Path(p.image_path).stem in stems]
        crops = [c for c in crops if Path(c.image_path).stem in stems]
    if not points and not crops:
        raise MorphError("empty_dataset", "no labelled cells to evaluate (after the split filter)", path=data.root)
    return points, crops


def _score_crops(clf: CellClassifier, points: list[LabelledPoint], crops: list[LabelledCrop], um: float,
                 stain: str, scored: _Scored) -> None:
    """``points`` mode: classify the crop cut at every labelled point, and every ready-cut crop."""
    from .data import crops_from_files, crops_from_points

    sets = []
    if points:
        sets.append(crops_from_points(points, clf.preprocessing, um, stain=stain))
    if crops:
        sets.append(crops_from_files(crops, clf.preprocessing, stain=stain))
    for cs in sets:
        scored.skipped += [f"{i.path}: {i.message}" for i in cs.issues]
        if not len(cs):
            continue
        pred = clf.predict_crops(cs.crops, cs.kinds, stain)
        for truth, raw, final, conf in zip(cs.labels, pred.raw_labels, pred.labels, pred.confidences.tolist(),
                                           strict=True):
            scored.add(truth, raw, final, conf)


def _score_fields(clf: CellClassifier, points: list[LabelledPoint], um: float, stain: str, scored: _Scored) -> None:
    """``pipeline`` mode: analyse every labelled field and score each point by the detected cell
    matched to it (``missed`` when none is within 3.75 um)."""
    from collections import defaultdict

    from .errors import MorphError
    from .io import read_image
    from .pipeline import AnalysisOptions, Analyzer

    analyzer = Analyzer(classifier=clf)
    options = AnalysisOptions(um_per_px=um, stain=stain).validate()
    by_img: dict[str, list[LabelledPoint]] = defaultdict(list)
    for p in points:
        by_img[p.image_path].append(p)
    n_det = n_matched = 0
    for path, pts in by_img.items():
        try:
            img = read_image(path)
        except MorphError as exc:
            scored.skipped.append(f"{path}: {exc.message} [{exc.code}]")
            continue
        res = analyzer.analyze_field(img, path, options)
        cells = [c for c in res.cells if c.kind in ("rbc", "nucleated")]
        n_det += len(cells)
        match = _match_points(pts, cells, 3.75 / um)
        for i, p in enumerate(pts):
            if i in match:
                c = cells[match[i]]
                n_matched += 1
                scored.add(p.label, c.top_labels[0][0] if c.top_labels else c.label, c.label, float(c.confidence))
            else:
                scored.add(p.label, "missed", "missed", 0.0)
    n = len(scored.y_true)
    scored.extra["detection"] = {"labelled_points": n, "matched": n_matched, "detected_cells": n_det,
                                 "point_recall": round(n_matched / max(n, 1), 4), "match_radius_um": 3.75}


def _match_points(pts: list[LabelledPoint], cells: list[Cell], radius: float) -> dict[int, int]:
    """Labelled point index -> detected cell index: closest pairs first, each cell and each point
    used once, never farther apart than ``radius`` px."""
    used: set[int] = set()
    xy = np.array([(c.x, c.y) for c in cells]) if cells else np.zeros((0, 2))
    pairs: list[tuple[float, int, int]] = []
    for i, p in enumerate(pts):
        if len(xy):
            d = np.hypot(xy[:, 0] - p.x, xy[:, 1] - p.y)
            pairs.extend((float(d[j]), i, int(j)) for j in np.flatnonzero(d <= radius))
    pairs.sort()
    match: dict[int, int] = {}
    for _, pi, cj in pairs:
        if pi not in match and cj not in used:
            match[pi] = cj
            used.add(cj)
    return match


def _labelled_metrics(clf: CellClassifier, scored: _Scored, mode: str, split: str) -> dict[str, Any]:
    """The metrics.json shape, before and after the confidence thresholds, with what was skipped."""
    confs = np.array(scored.conf)
    m = classification_metrics(scored.y_true, scored.raw, confs, list(getattr(clf, "labels", [])))
    mt = classification_metrics(scored.y_true, scored.final, confs, list(getattr(clf, "labels", [])), raw_pred=scored.raw)
    m["with_threshold"] = {k: mt[k] for k in ("accuracy", "macro_f1", "unidentified_fraction")}
    m["model"] = {"name": clf.name, "version": clf.version}
    m["mode"] = mode
    m["split"] = split
    m["skipped"] = len(scored.skipped)
    m["skipped_examples"] = scored.skipped[:20]
    m.update(scored.extra)
    return m


# --------------------------------------------------------------------------------------------
# out-of-distribution objects: how many go to ``unidentified`` (``benchmarks/ood.py``)
# --------------------------------------------------------------------------------------------
#: Object types of the OOD measurement: the rendered objects of :data:`morph.synth.OOD_OBJECTS`,
#: and two cuts of rendered fields: a red cell cut by the image edge (cropped at its visible
#: centre, the window filled by reflection as in the pipeline) and two overlapping red cells
#: cropped at their midpoint (as when a localizer takes them for one cell).
OOD_FIELD_OBJECTS: tuple[str, ...] = ("cut_off_cell", "overlapping_cells")


def ood_object_crops(preprocessing: Any, obj: str, n: int, seed: int = 0, um_per_px: float | None = None,
                     stain: str = "wright") -> np.ndarray:
    """``n`` crops of ``obj`` (:data:`morph.synth.OOD_OBJECTS` or :data:`OOD_FIELD_OBJECTS`) at a
    model's scale, rendered at field scale ``um_per_px`` and resized as at inference."""
    from .classify import resize_crops
    from .segment import DEFAULT_UM_PER_PX
    from .synth import render_ood_crop

    um = float(um_per_px or DEFAULT_UM_PER_PX)
    if obj in OOD_FIELD_OBJECTS:
        return _field_object_crops(preprocessing, obj, n, seed, um)
    win = preprocessing.window_px(um, "rbc")
    crops = np.stack([render_ood_crop(seed * 100_003 + i, obj, stain=stain, size=win, um_per_px=um) for i in range(n)])
    return resize_crops(crops, preprocessing.crop_size)


def _field_object_crops(preprocessing: Any, obj: str, n: int, seed: int, um: float) -> np.ndarray:
    """Cut-off or overlapping red cells from rendered blood fields (overlap everywhere)."""
    from .classify import extract_crops
    from .synth import render_field

    out: list[np.ndarray] = []
    for i in range(200):
        if sum(len(c) for c in out) >= n:
            break
        f = render_field(seed * 1_009 + i, field_type="blood", height=480, width=640, um_per_px=um, overlap=1.0,
                         label_weights={"normal": 0.8, "macrocyte": 0.1, "target_cell": 0.1})
        rbc = [c for c in f.cells if c.kind == "rbc"]
        if obj == "cut_off_cell":
            centres = [(c.x, c.y) for c in rbc if c.touches_border and c.mask is not None
                       and c.mask.sum() < 0.6 * np.pi * (c.diameter_px / 2) ** 2]
        else:
            centres = _overlap_midpoints([c for c in rbc if not c.touches_border])
        if centres:
            out.append(extract_crops(f.image, centres, um, preprocessing))
    crops = np.concatenate(out) if out else np.zeros((0, preprocessing.crop_size, preprocessing.crop_size, 3), np.uint8)
    return crops[:n]


def _overlap_midpoints(cells: list[SynthCell]) -> list[tuple[float, float]]:
    """Midpoints of pairs of cells whose centres are 0.5-0.85 of their summed radii apart (clearly
    overlapping, neither hidden); each cell in one pair at most."""
    used: set[int] = set()
    out = []
    for i, a in enumerate(cells):
        for j in range(i + 1, len(cells)):
            b = cells[j]
            d = float(np.hypot(a.x - b.x, a.y - b.y))
            if i in used or j in used or not 0.5 <= d / ((a.diameter_px + b.diameter_px) / 2) <= 0.85:
                continue
            used.update((i, j))
            out.append(((a.x + b.x) / 2, (a.y + b.y) / 2))
    return out


def auroc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """Area under the ROC curve of a score that should be higher on ``positive`` (ties count half)."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(pos) or not len(neg):
        return None
    ranks = _average_ranks(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def ood_rejection(clf: CellClassifier, logits: np.ndarray, kind: str = "rbc", stain: str = "wright",
                  reference: np.ndarray | None = None) -> dict[str, Any]:
    """Shares of cells sent to ``unidentified``: by the confidence threshold alone, by the OOD
    threshold alone, by both at once, and in all (either). With ``reference`` (logits of
    in-distribution cells), also how well the energy score and the confidence (1 - max softmax)
    tell these cells from the reference ones (AUROC; 0.5 = not at all)."""
    pred = clf.decode(logits, kind, stain)
    n = len(logits)
    low = np.array([c < clf.threshold_for(r) for r, c in zip(pred.raw_labels, pred.confidences, strict=True)], bool)
    ood = pred.out_of_distribution.astype(bool)
    row: dict[str, Any] = {"n": n}
    for name, sel in (("threshold", low), ("ood", ood), ("both", low & ood), ("unidentified", low | ood)):
        row[name] = round(float(sel.mean()), 4) if n else None
    if n:  # what the model takes them for, before any rejection
        labels, counts = np.unique(np.array(pred.raw_labels, dtype=object), return_counts=True)
        row["most_called"] = {"label": str(labels[counts.argmax()]), "share": round(float(counts.max() / n), 4)}
    if reference is not None:
        ref = clf.decode(reference, kind, stain)
        row["auroc_energy"] = auroc(pred.ood_scores, ref.ood_scores)
        row["auroc_confidence"] = auroc(-pred.confidences, -ref.confidences)
    return row
