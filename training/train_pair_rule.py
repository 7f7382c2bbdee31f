"""Learn the rule that joins a red cell the centre map cut in two (:mod:`morph.segment.pairs`)
from real boxes, and write it into a localizer folder: a small network that reads each pair's
picture and measures (``--judge net``, the default: ``pair_net.json`` + ``pair_net.pt``) or a
logistic rule over the measures alone (``--judge logistic``: ``pair_rule.json``).

Usage::

    python -m training.train_pair_rule --localizer models/locnet-v3 --out models/locnet-v5
    python -m training.train_pair_rule --yolo /lab/boxes --classes 0=rbc --bcd none --out models/locnet-lab

Every field of the data set's training split (and bcd-256's training part; its held-out test
part is never read) is located with the folder's centre map, without a pair rule. Each pair
of touching red-cell regions is labelled from the red-cell boxes: **one cell** when the box
round both regions matches a labelled box (IoU >= 0.6) better, by 0.1, than either region's
own box does; **two cells** when the two regions match two different boxes (IoU >= 0.5
each); other pairs (unlabelled border cells, boxes that match neither way) are left out.
Each training field is located as it is and under ``--shifted`` stain, focus and camera
shifts (:data:`TRAIN_SHIFTS`; the boxes hold under all of them); the validation fields as they
are. The logistic rule is fitted with Newton steps and a small L2 penalty. The network is trained
with a fixed recipe (``--epochs``, AdamW, one-cycle, the four mirrored views of a pair as
augmentation) behind a logistic gate: the gate's threshold is the highest that still passes
99.5% of the training split's cut cells, and the network only pictures the pairs it passes.
The threshold is chosen on the validation split: the one that joins most split cells while a
wrong join (two cells made one: a cell lost) counts ``--wrong-cost`` times a missed join (one
extra detection). Chula RBC-12 and the test split are never used.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from morph import shifts  # noqa: E402
from morph.io import read_image, write_json  # noqa: E402
from morph.localize import CentreDetector, PairNetJudge, load_localizer, mirrored_pairs  # noqa: E402
from morph.models import count_parameters, create_model  # noqa: E402
from morph.segment import FieldPairs, red_cell_pairs_of_field  # noqa: E402
from morph.segment.pairs import CROP_CHANNELS, CROP_SHAPE, PAIR_FEATURES, PairRule  # noqa: E402
from training.train_localizer import bcd256_boxes, load_samples, parse_classes, yolo_boxes_by_image  # noqa: E402

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


def label_pairs(pairs: FieldPairs, boxes: np.ndarray) -> np.ndarray:
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


@dataclass
class LabelledPairs:
    """The labelled pairs of some fields: measures ``(n, F)``, pictures ``(n, C, h, w)``
    (float16, when the judge reads them) and labels ``(n,)``."""

    features: np.ndarray
    crops: np.ndarray | None
    labels: np.ndarray

    @classmethod
    def concat(cls, parts: list[LabelledPairs], with_crops: bool) -> LabelledPairs:
        empty = cls(np.zeros((0, len(PAIR_FEATURES))),
                    np.zeros((0, len(CROP_CHANNELS), *CROP_SHAPE), np.float16) if with_crops else None,
                    np.zeros(0, dtype=np.int64))
        parts = [empty, *parts]
        crops = np.concatenate([p.crops for p in parts if p.crops is not None]) if with_crops else None
        return cls(np.concatenate([p.features for p in parts]), crops, np.concatenate([p.labels for p in parts]))


#: the localizer every worker locates fields with, and whether it keeps the pictures (set
#: once per worker process)
_DETECTOR: CentreDetector | None = None
_WITH_CROPS = False


def _init_worker(folder: str, with_crops: bool) -> None:
    global _DETECTOR, _WITH_CROPS
    import torch

    torch.set_num_threads(1)
    _DETECTOR = load_localizer(folder)
    _DETECTOR.pair_rule = None  # the pairs as they are before any joining
    _WITH_CROPS = with_crops


#: The stain, focus and camera shifts a training field is also located under (``--shifted``):
#: another lab's pairs look like these, not only like the training labs'. (Magnitudes apart from
#: the robustness benchmark's, which measures what they buy.)
TRAIN_SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "hue +15": lambda im: shifts.rotate_stain_hue(im, 15.0),
    "hue -15": lambda im: shifts.rotate_stain_hue(im, -15.0),
    "saturation x0.7": lambda im: shifts.adjust_saturation(im, 0.7),
    "saturation x1.3": lambda im: shifts.adjust_saturation(im, 1.3),
    "stain x0.6": lambda im: shifts.scale_stain(im, 0.6),
    "stain x1.3": lambda im: shifts.scale_stain(im, 1.3),
    "defocus 1.5 px": lambda im: shifts.defocus(im, 1.5),
    "defocus 2.5 px": lambda im: shifts.defocus(im, 2.5),
    "noise 6": lambda im: shifts.add_sensor_noise(im, 6.0),
    "jpeg 40": lambda im: shifts.jpeg_round_trip(im, 40),
}

#: a field to locate: image path, red-cell boxes, the shift applied ("" for none)
Job = tuple[str, np.ndarray, str]


def with_shifted(jobs: list[tuple[str, np.ndarray]], per_field: int, seed: int = 0) -> list[Job]:
    """Every field as it is, and ``per_field`` more times under shifts of :data:`TRAIN_SHIFTS`
    (different ones, drawn with ``seed``)."""
    rng = np.random.default_rng(seed)
    names = sorted(TRAIN_SHIFTS)
    out: list[Job] = []
    for path, boxes in jobs:
        out.append((path, boxes, ""))
        picked = rng.choice(len(names), size=min(per_field, len(names)), replace=False) if per_field > 0 else []
        out += [(path, boxes, names[i]) for i in picked]
    return out


def _field_job(job: Job) -> LabelledPairs:
    path, boxes, shift = job
    assert _DETECTOR is not None
    image = read_image(path)
    pairs = red_cell_pairs_of_field(TRAIN_SHIFTS[shift](image) if shift else image, _DETECTOR, with_crops=_WITH_CROPS)
    y = label_pairs(pairs, boxes)
    keep = y != UNSURE
    crops = pairs.crops[keep].astype(np.float16) if pairs.crops is not None else None
    return LabelledPairs(pairs.features[keep], crops, y[keep])


def collect(jobs: list[Job], folder: str, workers: int, desc: str, progress: bool,
            with_crops: bool = False) -> LabelledPairs:
    """The labelled pairs of every field (``jobs``: image path, red-cell boxes, shift)."""
    parts = load_samples(jobs, _field_job, desc, workers, progress, _init_worker, (folder, with_crops))
    return LabelledPairs.concat(parts, with_crops)


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


#: the gate thresholds tried, highest first, and the share of cut cells the gate must pass
GATE_THRESHOLDS = (0.05, 0.02, 0.01, 0.005, 0.002, 0.0)
GATE_PASSES = 0.995


def fit_gate(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> PairRule:
    """A logistic rule over the measures whose threshold is the highest of
    :data:`GATE_THRESHOLDS` passing :data:`GATE_PASSES` of the cut cells in ``x``."""
    rule = fit_logistic(x, y, l2)
    p = rule.probability(x)[y == ONE_CELL]
    threshold = next(t for t in GATE_THRESHOLDS if (p >= t).mean() >= GATE_PASSES)
    return PairRule(rule.mean, rule.scale, rule.coef, rule.bias, threshold)


def fit_pair_net(data: LabelledPairs, arch: str = "pairnet", epochs: int = 30, seed: int = 0,
                 progress: bool = False, l2: float = 1e-2) -> PairNetJudge:
    """Train a pair network on labelled pairs with a fixed recipe (AdamW 2e-3, weight decay
    1e-3, one-cycle, batches of 128, a random mirrored view of each batch) behind its gate
    (:func:`fit_gate`); threshold 0.5."""
    import torch
    from torch import nn

    assert data.crops is not None, "a pair network learns from the pairs' pictures"
    torch.manual_seed(seed)
    gate = fit_gate(data.features, data.labels, l2)
    mean, scale = np.asarray(gate.mean), np.asarray(gate.scale)  # the measures standardised as the gate does
    crops = torch.from_numpy(data.crops.astype(np.float32))
    feats = torch.from_numpy(((data.features - mean) / scale).astype(np.float32))
    target = torch.from_numpy(data.labels.astype(np.float32))
    net = create_model(arch)
    batch = 128
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * (len(target) // batch + 1))
    loss_fn = nn.BCEWithLogitsLoss()
    rounds: Any = range(epochs)
    if progress:
        from tqdm import tqdm

        rounds = tqdm(rounds, desc=f"pair network ({count_parameters(net)} parameters)", unit="epoch", leave=False)
    net.train()
    for _ in rounds:
        order = torch.randperm(len(target))
        for k in range(0, len(order), batch):
            idx = order[k:k + batch]
            along, across = (bool(v) for v in torch.rand(2) < 0.5)
            loss = loss_fn(net(mirrored_pairs(crops[idx], along, across), feats[idx])[:, 0], target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return PairNetJudge(net.eval(), gate.mean, gate.scale, 0.5, gate, arch)


def probabilities(judge: PairNetJudge | PairRule, data: LabelledPairs) -> np.ndarray:
    """The judge's probability for each labelled pair."""
    crops = data.crops
    return judge.probability(data.features, (lambda which: crops[which]) if crops is not None else None)


def join_counts(probability: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, int]:
    """Split cells joined and pairs of cells wrongly joined at ``threshold``."""
    joined = probability >= threshold
    return {"split_cells": int((y == ONE_CELL).sum()), "joined": int((joined & (y == ONE_CELL)).sum()),
            "cell_pairs": int((y == TWO_CELLS).sum()), "wrongly_joined": int((joined & (y == TWO_CELLS)).sum())}


def choose_threshold(probability: np.ndarray, y: np.ndarray, wrong_cost: float) -> float:
    """The threshold (0.5-0.95) with the most split cells joined less ``wrong_cost`` per wrong
    join; ties go to the higher (safer) threshold."""
    grid = np.round(np.arange(0.5, 0.951, 0.05), 2)
    gains = [join_counts(probability, y, t) for t in grid]
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
    ap.add_argument("--judge", choices=("net", "logistic"), default="net",
                    help="a pair network reading pictures and measures, or a logistic rule over the measures")
    ap.add_argument("--arch", default="pairnet", help="the pair network's architecture (model registry)")
    ap.add_argument("--epochs", type=int, default=30, help="pair network training epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shifted", type=int, default=1,
                    help="each training field is also located under this many stain / focus / camera shifts")
    ap.add_argument("--wrong-cost", type=float, default=3.0,
                    help="cost of joining two cells, in missed joins, when the threshold is chosen")
    ap.add_argument("--l2", type=float, default=1e-2, help="the logistic rule's (and the gate's) L2 penalty")
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
    train = [(p, b["rbc"]) for p, b in yolo_boxes_by_image(root, args.train_split, {c: "rbc" for c in rbc}, ("rbc",)).items()]
    val = [(p, b["rbc"]) for p, b in yolo_boxes_by_image(root, args.val_split, {c: "rbc" for c in rbc}, ("rbc",)).items()]
    bcd = Path(args.bcd) if args.bcd.lower() != "none" else None
    if bcd is not None and (bcd / "annotations.csv").is_file():
        train += [(p, b["rbc"]) for p, b in bcd256_boxes(bcd, ("rbc",), 0)[0].items()]
    elif bcd is not None:
        log.warning("bcd-256 not found under %s: skipped", bcd)
    progress = not args.no_progress
    folder, with_crops = str(source.folder), args.judge == "net"
    train_pairs = collect(with_shifted(train, args.shifted, args.seed), folder, args.workers, "train fields", progress,
                          with_crops)
    val_pairs = collect(with_shifted(val, 0), folder, args.workers, "val fields", progress, with_crops)
    if not (train_pairs.labels == ONE_CELL).any() or not (train_pairs.labels == TWO_CELLS).any():
        raise SystemExit("no labelled pairs of both kinds in the training fields: nothing to learn")
    judge: PairNetJudge | PairRule
    if with_crops:
        judge = fit_pair_net(train_pairs, args.arch, args.epochs, args.seed, progress, args.l2)
    else:
        judge = fit_logistic(train_pairs.features, train_pairs.labels, args.l2)
    p_train, p_val = (probabilities(judge, d) for d in (train_pairs, val_pairs))
    threshold = choose_threshold(p_val, val_pairs.labels, args.wrong_cost)
    report = {"train": join_counts(p_train, train_pairs.labels, threshold),
              "val": join_counts(p_val, val_pairs.labels, threshold)}
    log.info("threshold %.2f; train %s; val %s", threshold, report["train"], report["val"])
    provenance = {"localizer": source.name, "judge": args.judge, "data": [root.name] + (["bcd-256 training part"] if bcd else []),
                  "train_split": args.train_split, "val_split": args.val_split, "wrong_cost": args.wrong_cost,
                  "fields": {"train": len(train), "val": len(val)}, "pairs": report,
                  "l2": args.l2, "shifted_per_field": args.shifted,
                  **({"epochs": args.epochs, "seed": args.seed} if with_crops else {})}
    out = Path(args.out)
    write_rule(out, source, judge, threshold, provenance)
    if args.version:
        cfg = load_localizer(out).config()
        cfg.update(name=out.name, version=args.version)
        write_json(out / "config.json", cfg)
    log.info("wrote %s", out)
    return 0


#: the files of a localizer folder that hold its pair rule (either kind)
RULE_FILES = ("pair_rule.json", "pair_net.json", "pair_net.pt")


def write_rule(out: Path, source: CentreDetector, judge: PairNetJudge | PairRule, threshold: float,
               provenance: dict[str, Any]) -> None:
    """``out``: the source localizer folder with ``judge`` (at ``threshold``) as its one pair rule."""
    assert source.folder is not None
    if out.resolve() != source.folder.resolve():
        # the network and its peak rules; the source's card describes the source, not this folder
        shutil.copytree(source.folder, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("MODEL_CARD.md", *RULE_FILES))
    for name in RULE_FILES:  # a rule of the other kind left from before would not be this one
        (out / name).unlink(missing_ok=True)
    if isinstance(judge, PairNetJudge):
        judge.threshold, judge.provenance = threshold, provenance
        judge.save(out)
    else:
        rule = PairRule(judge.mean, judge.scale, judge.coef, judge.bias, threshold)
        write_json(out / "pair_rule.json", {**rule.to_dict(), "provenance": provenance})


if __name__ == "__main__":
    raise SystemExit(main())
