"""Cell-classifier benchmark: the shipped model vs the ResNet-18 baseline, on the same
fixed Chula validation split (by image) and the same synthetic validation fields.

    python benchmarks/classifier.py                        # shipped model vs runs/baseline-resnet18
    python benchmarks/classifier.py --train-baseline --device cuda   # (re)train the baseline first

Prints one table: macro-F1, accuracy, teardrop F1, ECE (after temperature scaling),
crops/s on this CPU (torch threads = --threads), parameters, training time; then the
synthetic targets. Numbers are measured here, now; crops/s depends on how busy the
machine is (the load average is printed with it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def crops_per_second(clf: Any, crops: np.ndarray, threads: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timed passes of :meth:`CellClassifier.logits` (normalisation + network)."""
    torch.set_num_threads(threads)
    clf.logits(crops[:256])  # warm-up (builds the fused network)
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        clf.logits(crops)
        best = max(best, len(crops) / (time.perf_counter() - t))
    return best


def chula_val(clf: Any, data_dir: Path) -> tuple[dict[str, Any], np.ndarray]:
    from morph.data import crops_from_points
    from morph.evaluation import evaluate_labelled
    from morph.readers import read_labelled_data

    data = read_labelled_data(data_dir / "chula-rbc-12", "chula", str(REPO / "training/mappings/chula.yaml"))
    m = evaluate_labelled(clf, data, mode="points", split="val")
    stems = {g.split(":", 1)[-1] for g in json.loads((Path(clf.folder) / "split.json").read_text())["val_images"]}
    pts = [p for p in data.points if Path(p.image_path).stem in stems]
    from morph.segment import DEFAULT_UM_PER_PX

    crops = crops_from_points(pts, clf.preprocessing, DEFAULT_UM_PER_PX).crops
    return m, crops


def synthetic(clf: Any, cfg_path: Path) -> dict[str, Any]:
    from training.train import evaluate, load_config, synthetic_metrics, synthetic_val_fields

    cfg = load_config(cfg_path)
    sv = synthetic_val_fields(cfg, clf.preprocessing)
    logits = evaluate(clf.net, torch.from_numpy(sv.crops), clf.preprocessing)
    return dict(synthetic_metrics(clf, logits, sv)["targets"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--baseline", default=str(REPO / "runs" / "baseline-resnet18"), help="ResNet-18 model folder")
    p.add_argument("--train-baseline", action="store_true", help="train the baseline first (training/configs/resnet18.yaml)")
    p.add_argument("--device", default="cpu", help="device for --train-baseline")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the speed test (2 = this machine)")
    p.add_argument("--speed-crops", type=int, default=2048)
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic validation fields")
    p.add_argument("--json", default=None, help="also write the results as JSON")
    args = p.parse_args()

    from morph.classify import load_model
    from morph.models import count_parameters

    data_dir = Path(os.environ.get("MORPH_DATA_DIR", REPO.parent / "shared" / "data"))
    if args.train_baseline:
        from training.train import get_args_parser
        from training.train import main as train_main

        train_main(get_args_parser().parse_args([
            "--config", str(REPO / "training/configs/resnet18.yaml"), "--out", args.baseline,
            "--device", args.device, "--run-dir", str(REPO / "runs" / "resnet18-baseline")]))
    rows = []
    synth = {}
    for role, path in (("ours", args.model), ("baseline", args.baseline)):
        if role == "baseline" and not Path(path).is_dir():
            print(f"baseline model folder {path} not found: run with --train-baseline", file=sys.stderr)
            continue
        clf = load_model(path)
        m, crops = chula_val(clf, data_dir)
        reps = int(np.ceil(args.speed_crops / len(crops)))
        speed_crops = np.concatenate([crops] * reps)[: args.speed_crops]
        own = json.loads((Path(clf.folder) / "metrics.json").read_text())
        rows.append({
            "model": f"{clf.name} ({clf.arch})",
            "macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
            "teardrop_f1": m["per_class"].get("teardrop", {}).get("f1"), "ece": m.get("ece"),
            "crops_per_s": round(crops_per_second(clf, speed_crops, args.threads)),
            "crops_per_s_1thread": round(crops_per_second(clf, speed_crops, 1)),
            "params": count_parameters(clf.net),
            "train_time_s": own.get("train_time_s"), "train_device": own.get("device", "?"),
            "n_val": m["n"], "load_avg": round(os.getloadavg()[0], 2),
        })
        if not args.no_synthetic and (Path(clf.folder) / "training_config.yaml").is_file():
            synth[rows[-1]["model"]] = synthetic(clf, Path(clf.folder) / "training_config.yaml")
    hdr = f"{'model':<34}{'macro-F1':>9}{'acc':>8}{'tear F1':>9}{'ECE':>8}{'crops/s':>9}{'(1 thr)':>9}{'params':>11}{'train s':>9}  device"
    print(f"Chula RBC-12 validation split (by image), n = {rows[0]['n_val'] if rows else 0} cells; "
          f"speed with {args.threads} torch threads, load average {rows[0]['load_avg'] if rows else '?'}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['model']:<34}{r['macro_f1']:>9.4f}{r['accuracy']:>8.4f}{(r['teardrop_f1'] or 0):>9.3f}"
              f"{(r['ece'] or 0):>8.4f}{r['crops_per_s']:>9}{r['crops_per_s_1thread']:>9}{r['params']:>11,}"
              f"{(r['train_time_s'] or 0):>9.0f}  {r['train_device']}")
    if len(rows) == 2:
        print(f"speed-up ours/baseline: {rows[0]['crops_per_s'] / max(rows[1]['crops_per_s'], 1):.1f}x "
              f"({args.threads} threads), {rows[0]['crops_per_s_1thread'] / max(rows[1]['crops_per_s_1thread'], 1):.1f}x (1 thread)")
    print("targets: macro-F1 >= 0.88, accuracy >= 0.92, teardrop F1 >= 0.85, ECE <= 0.03, >= 2000 crops/s, >= 3x baseline")
    if synth:
        print("\nSynthetic validation fields (targets: reticulocyte P/R >= 0.95 both stains; megaloblast vs "
              "normoblast F1 >= 0.95; hypersegmented neutrophil F1 >= 0.95)")
        for name, t in synth.items():
            rw, rn = t["reticulocyte_wright"], t["reticulocyte_nmb"]
            print(f"  {name:<32} retic wright P {rw['precision']} R {rw['recall']} (n {rw['support']}) | "
                  f"retic nmb P {rn['precision']} R {rn['recall']} (n {rn['support']}) | "
                  f"mega/normo F1 {t['megaloblast_vs_normoblast_f1']} | hyperseg F1 {t['hypersegmented_neutrophil_f1']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "synthetic": synth}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
