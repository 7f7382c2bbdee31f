"""Learn the rule that joins a red cell the centre map cut in two (:mod:`morph.segment.pairs`)
from real boxes, and write it into a localizer folder as ``pair_rule.json``.

Usage::

    python -m training.train_pair_rule --localizer models/locnet-v3 --out models/locnet-v4
    python -m training.train_pair_rule --yolo /lab/boxes --classes 0=rbc --bcd none --out models/locnet-lab

Every field of the data set's training split (and bcd-256's training part; its held-out test
part is never read) is located with the folder's centre map, without a pair rule. Each pair
of touching red-cell regions is labelled from the red-cell boxes: **one cell** when the box
round both regions matches a labelled box (IoU >= 0.6) better, by 0.1, than either region's
own box does; **two cells** when the two regions match two different boxes (IoU >= 0.5
each); other pairs (unlabelled border cells, boxes that match neither way) are left out. A
logistic rule over :data:`morph.segment.pairs.PAIR_FEATURES` is fitted (Newton steps, a small
L2 penalty), and its threshold is chosen on the validation split: the one that joins most
split cells while a wrong join (two cells made one: a cell lost) counts ``--wrong-cost``
times a missed join (one extra detection). Chula RBC-12 and the test split are never used.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from morph.io import read_image, write_json  # noqa: E402
from morph.localize import CentreDetector, load_localizer  # noqa: E402
from morph.segment import CellPairs, red_cell_pairs_of_field  # noqa: E402
from morph.segment.pairs import PAIR_FEATURES, PairRule  # noqa: E402
from training.train_localizer import _boxes_by_image, bcd256_boxes, parse_classes  # noqa: E402

log = logging.getLogger("train_pair_rule")

#: label of a pair: one cell cut in two, two cells, or left out
ONE_CELL, TWO_CELLS, UNSURE = 1, 0, -1


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (x0, y0, x1, y1) with each of ``boxes`` (m, 4)."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area - inter, 1e-9)


def label_pairs(pairs: CellPairs, boxes: np.ndarray) -> np.ndarray:
    """:data:`ONE_CELL`, :data:`TWO_CELLS` or :data:`UNSURE` for each pair, from the field's
    red-cell boxes ``(m, 4)``."""
    out = np.full(len(pairs.features), UNSURE, dtype=np.int64)
    if not len(boxes):
        return out
    for n, (a, b) in enumerate(zip(pairs.boxes_a, pairs.boxes_b, strict=True)):
        both = np.array([min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])])
        ia, ib, iu = box_iou(a, boxes), box_iou(b, boxes), box_iou(both, boxes)
        if iu.max() >= 0.6 and iu.max() > max(ia.max(), ib.max()) + 0.1:
            out[n] = ONE_CELL
        elif ia.argmax() != ib.argmax() and min(ia.max(), ib.max()) >= 0.5:
            out[n] = TWO_CELLS
    return out


#: the localizer every worker locates fields with (set once per worker process)
_DETECTOR: CentreDetector | None = None


def _init_worker(folder: str) -> None:
    global _DETECTOR
    import torch

    torch.set_num_threads(1)
    _DETECTOR = load_localizer(folder)
    _DETECTOR.pair_rule = None  # the pairs as they are before any joining


def _field_job(job: tuple[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    path, boxes = job
    assert _DETECTOR is not None
    pairs = red_cell_pairs_of_field(read_image(path), _DETECTOR)
    return pairs.features, label_pairs(pairs, boxes)


def collect(jobs: list[tuple[str, np.ndarray]], folder: str, workers: int, desc: str,
            progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n, F)`` and labels ``(n,)`` of the labelled pairs of every field."""
    feats: list[np.ndarray] = [np.zeros((0, len(PAIR_FEATURES)))]
    labels: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    with Pool(workers, initializer=_init_worker, initargs=(folder,)) as pool:
        it: Any = pool.imap(_field_job, jobs, chunksize=4)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(jobs), desc=desc, unit="field", leave=False)
        for x, y in it:
            keep = y != UNSURE
            feats.append(x[keep])
            labels.append(y[keep])
    return np.concatenate(feats), np.concatenate(labels)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50) -> PairRule:
    """Logistic regression on standardised features (Newton steps); threshold 0.5."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = np.c_[(x - mean) / scale, np.ones(len(x))]
    w = np.zeros(z.shape[1])
    penalty = l2 * np.eye(len(w))
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-z @ w))
        grad = z.T @ (p - y) + penalty @ w
        hess = (z * (p * (1.0 - p))[:, None]).T @ z + penalty + 1e-9 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return PairRule(tuple(mean.tolist()), tuple(scale.tolist()), tuple(w[:-1].tolist()), float(w[-1]), 0.5)


def join_counts(rule: PairRule, x: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, int]:
    """Split cells joined and pairs of cells wrongly joined at ``threshold``."""
    joined = rule.probability(x) >= threshold
    return {"split_cells": int((y == ONE_CELL).sum()), "joined": int((joined & (y == ONE_CELL)).sum()),
            "cell_pairs": int((y == TWO_CELLS).sum()), "wrongly_joined": int((joined & (y == TWO_CELLS)).sum())}


def choose_threshold(rule: PairRule, x: np.ndarray, y: np.ndarray, wrong_cost: float) -> float:
    """The threshold (0.5-0.95) with the most split cells joined less ``wrong_cost`` per wrong
    join; ties go to the higher (safer) threshold."""
    grid = np.round(np.arange(0.5, 0.951, 0.05), 2)
    gains = [join_counts(rule, x, y, t) for t in grid]
    score = [g["joined"] - wrong_cost * g["wrongly_joined"] for g in gains]
    best = max(range(len(grid)), key=lambda i: (score[i], grid[i]))
    return float(grid[best])


def get_args_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--localizer", default=None,
                    help="localizer folder (or name under models/) to learn for (default: the shipped one)")
    ap.add_argument("--yolo", default=str(REPO.parent / "shared" / "data" / "txl-pbc"),
                    help="YOLO-box data set root (default: ../shared/data/txl-pbc)")
    ap.add_argument("--classes", default="1=rbc", help="YOLO class number = cell kind; only the rbc class is read")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--val-split", default="val")
    ap.add_argument("--bcd", default=str(REPO.parent / "shared" / "data" / "bcd-256"),
                    help="bcd-256 root (its training part joins the training pairs); 'none' to skip")
    ap.add_argument("--wrong-cost", type=float, default=3.0,
                    help="cost of joining two cells, in missed joins, when the threshold is chosen")
    ap.add_argument("--l2", type=float, default=1e-2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True, help="localizer folder to write (the --localizer folder copied, plus the rule)")
    ap.add_argument("--version", default=None, help="version written into the folder's config.json")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    source = load_localizer(args.localizer)
    assert source.folder is not None
    rbc = [num for num, kind in parse_classes(args.classes).items() if kind == "rbc"]
    root = Path(args.yolo)
    train = [(p, b["rbc"]) for p, b in _boxes_by_image(root, args.train_split, {c: "rbc" for c in rbc}, ("rbc",)).items()]
    val = [(p, b["rbc"]) for p, b in _boxes_by_image(root, args.val_split, {c: "rbc" for c in rbc}, ("rbc",)).items()]
    bcd = Path(args.bcd) if args.bcd.lower() != "none" else None
    if bcd is not None and (bcd / "annotations.csv").is_file():
        train += [(p, b["rbc"]) for p, b in bcd256_boxes(bcd, ("rbc",), 0)[0].items()]
    elif bcd is not None:
        log.warning("bcd-256 not found under %s: skipped", bcd)
    progress = not args.no_progress
    folder = str(source.folder)
    x_train, y_train = collect(train, folder, args.workers, "train fields", progress)
    x_val, y_val = collect(val, folder, args.workers, "val fields", progress)
    if not (y_train == ONE_CELL).any() or not (y_train == TWO_CELLS).any():
        raise SystemExit("no labelled pairs of both kinds in the training fields: nothing to learn")
    rule = fit_logistic(x_train, y_train, args.l2)
    threshold = choose_threshold(rule, x_val, y_val, args.wrong_cost)
    rule = PairRule(rule.mean, rule.scale, rule.coef, rule.bias, threshold)
    report = {"train": join_counts(rule, x_train, y_train, threshold),
              "val": join_counts(rule, x_val, y_val, threshold)}
    log.info("threshold %.2f; train %s; val %s", threshold, report["train"], report["val"])
    out = Path(args.out)
    if out.resolve() != source.folder.resolve():
        # the network and its peak rules; the source's card describes the source, not this folder
        shutil.copytree(source.folder, out, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("MODEL_CARD.md", "pair_rule.json"))
    provenance = {"localizer": source.name, "data": [root.name] + (["bcd-256 training part"] if bcd else []),
                  "train_split": args.train_split, "val_split": args.val_split, "wrong_cost": args.wrong_cost,
                  "l2": args.l2, "fields": {"train": len(train), "val": len(val)}, "pairs": report}
    write_json(out / "pair_rule.json", {**rule.to_dict(), "provenance": provenance})
    if args.version:
        cfg = load_localizer(out).config()
        cfg.update(name=out.name, version=args.version)
        write_json(out / "config.json", cfg)
    log.info("wrote %s", out / "pair_rule.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
