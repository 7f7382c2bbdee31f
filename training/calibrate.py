"""Re-calibrate a trained model folder for another test-time augmentation, without retraining.

    python -m training.calibrate --model models/morphnet-v1 --tta flips

Test-time augmentation changes the logits, so the temperature, the threshold and every
validation number must be fitted and measured again on the new logits. This rebuilds the
datasets from the folder's own ``training_config.yaml`` (same seed, so the same split by
image; checked against ``split.json``), then runs the same :func:`training.train.finalize`
as training does: temperature and threshold on the real validation split, metrics,
synthetic targets, confusion matrix, model card. The weights are not changed; the
training time and history recorded in ``metrics.json`` are kept.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from morph.classify import TTA_MODES, load_model
from morph.errors import MorphError
from morph.io import read_json

log = logging.getLogger("training.calibrate")

#: metrics.json entries that describe the training run itself, carried over unchanged (the
#: model card's distillation section reads "distillation")
_KEPT = ("history", "skipped_items", "threads", "device", "distillation")


def recalibrate(model: str | Path, tta: str, *, workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Refit temperature and threshold of the model folder ``model`` for ``tta`` and rewrite it.

    Returns the new ``metrics.json`` content.
    """
    from training.train import build_datasets, finalize, load_config

    if tta not in TTA_MODES:
        raise MorphError("bad_request", f"unknown tta {tta!r}; known: {', '.join(TTA_MODES)}", path="tta")
    clf = load_model(model)
    folder = Path(clf.folder or model)
    cfg_path = folder / "training_config.yaml"
    if not cfg_path.is_file():
        raise MorphError("bad_model", "re-calibration needs the training_config.yaml the model was trained with", path=str(cfg_path))
    cfg = load_config(cfg_path, {"tta": tta})
    ds = build_datasets(replace(cfg, workers=workers) if workers else cfg, progress)  # workers: not saved
    split_path = folder / "split.json"
    if split_path.is_file():
        old_val = read_json(split_path).get("val_images")
        if old_val != ds.split.get("val_images"):
            raise MorphError("bad_model", "the validation split rebuilt from training_config.yaml differs from split.json "
                             "(different data?); refusing to calibrate on other images", path=str(split_path))
    missing = sorted(set(ds.train.labels) ^ set(clf.labels))
    if missing:
        raise MorphError("bad_model", f"the rebuilt training labels differ from the model's: {', '.join(missing)}", path=str(folder))
    old = dict(clf.metrics)
    extra = {k: old[k] for k in _KEPT if k in old}
    pre = replace(clf.preprocessing, tta=tta)
    new = finalize(clf.net, cfg, pre, list(clf.labels), ds, folder, float(old.get("train_time_s", 0.0)), extra)
    log.info("re-calibrated %s for tta=%s: T %.4f -> %.4f", folder, tta, clf.temperature, new.temperature)
    return new.metrics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder to re-calibrate (rewritten in place)")
    p.add_argument("--tta", required=True, choices=sorted(TTA_MODES), help="test-time augmentation to calibrate for")
    p.add_argument("--workers", type=int, default=None, help="processes rendering synthetic crops (default: the config's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    m = recalibrate(args.model, args.tta, workers=args.workers, progress=not args.no_progress)
    print(json.dumps({k: m.get(k) for k in ("accuracy", "macro_f1", "teardrop_f1", "ece", "temperature")}))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raise SystemExit(main())
