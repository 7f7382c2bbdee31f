"""Cell-classifier benchmark: the shipped student, the teacher and the ResNet-18 from scratch
baseline side by side in one run, on the same Chula validation split (by image).

    python benchmarks/classifier.py                  # student vs teacher vs runs/baseline-resnet18
    python benchmarks/classifier.py --quick          # fewer crops for the shifts and the speed test
    python benchmarks/classifier.py --train-baseline   # (re)train the baseline first (~40 min on one CPU thread)

Prints, for each model found: macro-F1, accuracy, teardrop F1, ECE (after temperature scaling) on
the whole validation split; crops/s on one torch thread and on ``--threads``; parameters, weights
MB on disk, training time and device (from the model's metrics.json). Then the accuracy on the
same validation crops under every stain and scanner shift of ``benchmarks/robustness.py`` (its
shift list and crop code) with the worst drop from clean; then the targets of the classifier v2
issue, each PASS or miss; then the synthetic targets. The validation split is each folder's
split.json (same seed, so the same images: the script checks and says so when they differ).
Numbers are measured here, now; crops/s depends on how busy the machine is (the load average is
printed with it).
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
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import robustness  # noqa: E402

STAIN_DROP_GOAL = 0.03  # every stain shift within this of the clean accuracy
# (role, metric key, ">=" or "<=", goal): the Targets of the classifier v2 issue
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("student", "macro_f1", ">=", 0.88), ("student", "accuracy", ">=", 0.92),
    ("student", "teardrop_f1", ">=", 0.85), ("student", "ece", "<=", 0.03),
    ("student", "crops_per_s_1thread", ">=", 2000), ("student", "stain_worst_drop", "<=", STAIN_DROP_GOAL),
    ("teacher", "macro_f1", ">=", 0.89), ("teacher", "accuracy", ">=", 0.93),
    ("teacher", "teardrop_f1", ">=", 0.87), ("teacher", "stain_worst_drop", "<=", STAIN_DROP_GOAL),
)
TARGETS_LINE = ("targets: student macro-F1 >= 0.88, accuracy >= 0.92, teardrop F1 >= 0.85, ECE <= 0.03, "
                ">= 2000 crops/s on one thread; teacher macro-F1 >= 0.89, accuracy >= 0.93, teardrop F1 >= 0.87; "
                f"every stain shift within {STAIN_DROP_GOAL} of clean accuracy")
SYNTHETIC_LINE = ("synthetic targets (first classifier issue): reticulocyte P/R >= 0.95 on NMB (the only stain "
                  "that shows them); megaloblast vs normoblast F1 >= 0.95; hypersegmented neutrophil F1 >= 0.95")


# ----------------------------------------------------------------------------- models
def default_teacher() -> str | None:
    """The shipped teacher folder, else the training run's model folder, else none."""
    for p in (REPO / "models" / "teacher-lite0-v2", REPO / "models" / "teacher-lite0-v1",
              REPO / "runs" / "teacher-lite0-v2" / "model"):
        if p.is_dir():
            return str(p)
    return None


def load_models(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """``(role, classifier)`` for the student and whichever of teacher and baseline exist."""
    from morph.classify import load_model

    models = [("student", load_model(args.model))]
    for role, path, hint in (("teacher", args.teacher, "pass --teacher FOLDER"),
                             ("baseline", args.baseline, "run with --train-baseline or pass --baseline FOLDER")):
        if path and (Path(path) / "weights.pt").is_file():
            models.append((role, load_model(path)))
        else:
            print(f"{role} skipped: no model folder at {path or 'models/teacher-lite0-v2 or -v1, or runs/teacher-lite0-v2/model'}"
                  f" ({hint})")
    return models


def common_val_stems(models: list[tuple[str, Any]]) -> tuple[list[int], str]:
    """The validation images all models share, and a line saying whether their splits agree."""
    splits = {role: robustness.val_stems(Path(clf.folder)) for role, clf in models}
    first = next(iter(splits.values()))
    if all(s == first for s in splits.values()):
        return first, f"validation split: the same {len(first)} Chula images in every model folder's split.json"
    common = sorted(set.intersection(*(set(s) for s in splits.values())))
    sizes = ", ".join(f"{r} {len(s)}" for r, s in splits.items())
    return common, (f"WARNING: the split.json files DIFFER ({sizes} val images); each model's own metrics use "
                    f"its own split, the stain shifts use the {len(common)} images in all of them")


# ----------------------------------------------------------------------------- measuring
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


def headline(role: str, clf: Any, data: Any) -> dict[str, Any]:
    """Accuracy metrics on the model's whole validation split, and what the folder says of itself."""
    from morph.evaluation import evaluate_labelled
    from morph.models import count_parameters

    m = evaluate_labelled(clf, data, mode="points", split="val")
    own = clf.metrics or {}
    weights = Path(clf.folder) / "weights.pt"
    return {
        "role": role, "model": f"{clf.name} ({clf.arch})", "folder": str(clf.folder),
        "macro_f1": m["macro_f1"], "accuracy": m["accuracy"],
        "teardrop_f1": m["per_class"].get("teardrop", {}).get("f1"), "ece": m.get("ece"),
        "params": count_parameters(clf.net), "weights_mb": round(weights.stat().st_size / 1e6, 2),
        "train_time_s": own.get("train_time_s"), "train_device": own.get("device", "?"), "n_val": m["n"],
    }


def speed(clf: Any, crops: np.ndarray, n: int, threads: int) -> dict[str, Any]:
    reps = int(np.ceil(n / max(len(crops), 1)))
    batch = np.concatenate([crops] * reps)[:n]
    return {"crops_per_s_1thread": round(crops_per_second(clf, batch, 1)),
            "crops_per_s": round(crops_per_second(clf, batch, threads)), "load_avg": round(os.getloadavg()[0], 2)}


def shift_summary(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Clean accuracy, accuracy under each shift and the worst drop (with its shift)."""
    clean = rows[0][1]["accuracy"]
    per = {name: m["accuracy"] for name, m in rows[1:]}
    worst = max(per, key=lambda k: clean - per[k]) if per else None
    return {"n_crops": rows[0][1]["n"], "clean": clean, "per_shift": per,
            "stain_worst_drop": round(clean - per[worst], 4) if worst else None, "worst_shift": worst}


def synthetic(clf: Any) -> dict[str, Any] | None:
    """The synthetic targets on the rendered validation fields of the model's training config."""
    from training.train import evaluate, load_config, synthetic_metrics, synthetic_val_fields

    cfg_path = Path(clf.folder) / "training_config.yaml"
    if not cfg_path.is_file():
        return None
    sv = synthetic_val_fields(load_config(cfg_path), clf.preprocessing)
    logits = evaluate(clf.net, torch.from_numpy(sv.crops), clf.preprocessing)
    return dict(synthetic_metrics(clf, logits, sv)["targets"])


def check_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_role = {r["role"]: r for r in rows}
    out = []
    for role, key, op, goal in TARGETS:
        if role not in by_role:
            continue
        v = by_role[role].get(key)
        ok = v is not None and (v >= goal if op == ">=" else v <= goal)
        out.append({"role": role, "metric": key, "value": v, "goal": f"{op} {goal:g}", "ok": ok})
    return out


# ----------------------------------------------------------------------------- printing
def print_models(rows: list[dict[str, Any]], threads: int, split_line: str) -> None:
    print(f"\nChula RBC-12 validation split (by image), n = {rows[0]['n_val']} cells; {split_line}; "
          f"speed on 1 and {threads} torch threads, load average {rows[0]['load_avg']}")
    hdr = (f"{'role':<9}{'model':<40}{'macro-F1':>9}{'acc':>8}{'tear F1':>9}{'ECE':>8}{'crops/s':>9}"
           f"{f'({threads} thr)':>10}{'params':>11}{'MB':>7}{'train s':>9}  device")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        tear = "-" if r["teardrop_f1"] is None else f"{r['teardrop_f1']:.3f}"
        ece = "-" if r["ece"] is None else f"{r['ece']:.4f}"
        train = "-" if r["train_time_s"] is None else f"{r['train_time_s']:.0f}"
        print(f"{r['role']:<9}{r['model'][:39]:<40}{r['macro_f1']:>9.4f}{r['accuracy']:>8.4f}{tear:>9}{ece:>8}"
              f"{r['crops_per_s_1thread']:>9}{r['crops_per_s']:>10}{r['params']:>11,}{r['weights_mb']:>7.2f}"
              f"{train:>9}  {r['train_device']}")
    print("(crops/s: one torch thread first, the target's; macro-F1/acc/teardrop F1/ECE before the "
          "unidentified threshold)")


def print_shifts(rows: list[dict[str, Any]], n_fields: int) -> None:
    counts = ", ".join(f"{r['role']} {r['shifts']['n_crops']}" for r in rows)
    print(f"\nStain and scanner shifts (benchmarks/robustness.py): accuracy on the Chula val crops of "
          f"{n_fields} fields ({counts} crops)")
    print(f"{'shift':<24}" + "".join(f"{r['role']:>10}{'d':>8}" for r in rows))
    clean = [r["shifts"]["clean"] for r in rows]
    print(f"{'clean':<24}" + "".join(f"{c:>10.3f}{'':>8}" for c in clean))
    for name in rows[0]["shifts"]["per_shift"]:
        accs = [r["shifts"]["per_shift"][name] for r in rows]
        print(f"{name:<24}" + "".join(f"{a:>10.3f}{a - c:>+8.3f}" for a, c in zip(accs, clean, strict=True)))
    for r in rows:
        s = r["shifts"]
        verdict = "PASS" if s["stain_worst_drop"] is not None and s["stain_worst_drop"] <= STAIN_DROP_GOAL else "miss"
        print(f"worst drop {r['role']:<9} {s['stain_worst_drop']:.3f} ({s['worst_shift']}): {verdict} "
              f"(goal <= {STAIN_DROP_GOAL})")


def print_targets(targets: list[dict[str, Any]]) -> None:
    print(f"\n{TARGETS_LINE}")
    for t in targets:
        v = "n/a" if t["value"] is None else f"{t['value']:g}"
        print(f"  {'PASS' if t['ok'] else 'miss':<5}{t['role']:<9}{t['metric']:<22}{v:>10}  (goal {t['goal']})")


def synthetic_ok(t: dict[str, Any]) -> bool:
    rn = t["reticulocyte_nmb"]
    values = (rn["precision"], rn["recall"], t["megaloblast_vs_normoblast_f1"], t["hypersegmented_neutrophil_f1"])
    return all(v is not None and v >= 0.95 for v in values)


def print_synthetic(synth: dict[str, Any]) -> None:
    print(f"\n{SYNTHETIC_LINE}")
    for name, t in synth.items():
        rn = t["reticulocyte_nmb"]
        print(f"  {'PASS' if synthetic_ok(t) else 'miss':<5}{name:<36} retic nmb P {rn['precision']} R {rn['recall']} "
              f"(n {rn['support']}) | mega/normo F1 {t['megaloblast_vs_normoblast_f1']} | "
              f"hyperseg F1 {t['hypersegmented_neutrophil_f1']}")


def print_folders_size() -> None:
    folders = [p for p in (REPO / "models").iterdir() if p.is_dir()] if (REPO / "models").is_dir() else []
    mb = sum(f.stat().st_size for p in folders for f in p.rglob("*") if f.is_file()) / 1e6
    print(f"\nmodel folders in the repository ({', '.join(p.name for p in sorted(folders))}): {mb:.1f} MB "
          f"(goal < 20 MB): {'PASS' if mb < 20 else 'miss'}")


# ----------------------------------------------------------------------------- main
def progress(step: str) -> None:
    """What the run is doing, on stderr (the tables go to stdout)."""
    print(f"... {step}", file=sys.stderr, flush=True)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="the student's model folder (default: the shipped model)")
    p.add_argument("--teacher", default=default_teacher(),
                   help="teacher model folder (default: models/teacher-lite0-v2, else -v1, else runs/teacher-lite0-v2/model)")
    p.add_argument("--baseline", default=str(REPO / "runs" / "baseline-resnet18"), help="ResNet-18 model folder")
    p.add_argument("--data", type=Path, default=Path(os.environ.get("MORPH_DATA_DIR", REPO.parent / "shared" / "data")),
                   help="shared data dir (default: $MORPH_DATA_DIR or ../shared/data)")
    p.add_argument("--train-baseline", action="store_true", help="train the baseline first (training/configs/resnet18.yaml)")
    p.add_argument("--device", default="cpu", help="device for --train-baseline")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the second speed test (2 = this machine)")
    p.add_argument("--quick", action="store_true", help="10 fields for the stain shifts, 512 crops for the speed test")
    p.add_argument("--shift-fields", type=int, default=None, help="val fields for the stain shifts (default all, --quick 10)")
    p.add_argument("--speed-crops", type=int, default=None, help="crops per timed pass (default 2048, --quick 512)")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic validation fields")
    p.add_argument("--json", default=None, help="also write the results as JSON")
    return p


def train_baseline(args: argparse.Namespace) -> None:
    from training.train import get_args_parser as train_parser
    from training.train import main as train_main

    train_main(train_parser().parse_args([
        "--config", str(REPO / "training/configs/resnet18.yaml"), "--out", args.baseline,
        "--device", args.device, "--run-dir", str(REPO / "runs" / "resnet18-baseline")]))


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from morph.readers import read_labelled_data

    chula = args.data / "chula-rbc-12"
    if not chula.is_dir():
        print(f"Chula RBC-12 not found at {chula}: nothing to measure", file=sys.stderr)
        return 1
    if args.train_baseline:
        train_baseline(args)
    t0 = time.perf_counter()
    models = load_models(args)
    stems, split_line = common_val_stems(models)
    fields = robustness.chula_val_fields(chula, stems, args.shift_fields or (10 if args.quick else None))
    data = read_labelled_data(chula, "chula", str(REPO / "training/mappings/chula.yaml"))
    progress(f"scoring {len(models)} models on the validation split")
    rows = [headline(role, clf, data) for role, clf in models]
    labels = robustness.chula_labels()
    progress("timing")
    for r, (_, clf) in zip(rows, models, strict=True):
        r.update(speed(clf, robustness.field_crops(clf, fields, labels)[0],
                       args.speed_crops or (512 if args.quick else 2048), args.threads))
    torch.set_num_threads(args.threads)
    progress(f"{len(robustness.STAIN_SHIFTS) - 1} stain shifts on {len(fields)} fields")
    for r, shifted in zip(rows, robustness.classifier_shift_metrics([c for _, c in models], fields), strict=True):
        r["shifts"] = shift_summary(shifted)
        r["stain_worst_drop"] = r["shifts"]["stain_worst_drop"]
    print_models(rows, args.threads, split_line)
    if len(rows) > 1:
        print("speed-up of the student: " + ", ".join(
            f"{rows[0]['crops_per_s_1thread'] / max(r['crops_per_s_1thread'], 1):.1f}x the {r['role']}" for r in rows[1:])
            + " (1 thread)")
    print_shifts(rows, len(fields))
    targets = check_targets(rows)
    print_targets(targets)
    print_folders_size()
    synth = {}
    if not args.no_synthetic:
        progress("synthetic validation fields")
        synth = {r["model"]: s for r, (_, clf) in zip(rows, models, strict=True) if (s := synthetic(clf)) is not None}
        print_synthetic(synth)
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"split": split_line, "rows": rows, "targets": targets,
                                               "synthetic": synth}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
