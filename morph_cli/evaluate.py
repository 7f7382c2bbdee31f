"""``morph evaluate --data DIR --format F``: measure a model on labelled cells."""

from __future__ import annotations

import argparse
import sys

from .common import add_model_arg, um_per_px_arg


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from morph.context import STAINS

    p = sub.add_parser(
        "evaluate", help="measure a classifier on labelled data (per-class P/R/F1, macro-F1, ECE)",
        description="Classify crops at labelled points (--mode points) or run the whole pipeline and match "
        "detections to the points (--mode pipeline); write metrics JSON and a confusion-matrix PNG.",
    )
    p.add_argument("--data", required=True, help="data folder (or CSV file for --format csv)")
    p.add_argument("--format", required=True, choices=("chula", "yolo", "voc", "csv", "folder"))
    p.add_argument("--mapping", default=None, help="mapping YAML from the data's classes to morph labels")
    p.add_argument("--mode", choices=("points", "pipeline"), default="points")
    p.add_argument("--split", choices=("all", "val"), default="all",
                   help="'val': only the images in the model's validation split (split.json)")
    p.add_argument("--yolo-split", default=None, help="YOLO sub-folder (train/val/test)")
    p.add_argument("--um-per-px", type=um_per_px_arg, default=None, help="field scale (default: Chula)")
    p.add_argument("--stain", choices=STAINS, default="wright")
    p.add_argument("--out", required=True, help="metrics JSON to write (the PNG goes next to it)")
    add_model_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from morph.errors import MorphError
    from morph.evaluation import confusion_png, evaluate_labelled
    from morph.io import write_bytes_atomic, write_json
    from morph.pipeline import load_classifier
    from morph.readers import read_labelled_data

    clf = load_classifier(args.model)
    if clf is None:
        raise MorphError("bad_request", "evaluate measures a classifier; --model none has none", path="--model")
    data = read_labelled_data(args.data, args.format, args.mapping, args.yolo_split)
    metrics = evaluate_labelled(clf, data, mode=args.mode, split=args.split, um_per_px=args.um_per_px, stain=args.stain)
    out = Path(args.out)
    write_json(out, metrics)
    cm = metrics["confusion_matrix"]
    png = out.with_suffix(".png") if out.suffix.lower() != ".png" else out.with_name(out.stem + "_cm.png")
    write_bytes_atomic(png, confusion_png(cm["matrix"], cm["true_labels"], cm["pred_labels"], f"{clf.name} on {Path(args.data).name}"))
    print(f"{metrics['n']} cells: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}, "
          f"ECE {metrics.get('ece', float('nan')):.4f}")
    for lab, m in metrics["per_class"].items():
        print(f"  {lab:<28} P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}  n {m['support']}")
    if metrics.get("skipped"):
        print(f"{metrics['skipped']} labelled item(s) skipped (see 'skipped_examples' in {out})", file=sys.stderr)
    print(f"metrics written to {out}, confusion matrix to {png}")
    return 0
