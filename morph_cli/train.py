"""``morph train --config CONFIG.yaml``: retrain a cell classifier and write its model folder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "train", help="train a cell classifier from labelled images (writes a model folder)",
        description="Train a cell classifier from a YAML config (see training/configs/): seeded, split by "
        "image, class-balanced, with checkpoints (--resume) and a complete model folder at the end.",
    )
    p.add_argument("--config", required=True, help="training config YAML")
    p.add_argument("--out", default=None, help="model folder to write (default: <run-dir>/model)")
    p.add_argument("--run-dir", default=None, help="checkpoints and resolved config (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="resume from <run-dir>/checkpoint.pt")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-steps", type=int, default=None, help="cap the steps per epoch (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import logging

    from training.train import main

    logging.getLogger("training.train").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    metrics = main(args)
    summary = {k: metrics.get(k) for k in ("accuracy", "macro_f1", "teardrop_f1", "ece", "train_time_s", "skipped_items")}
    print(json.dumps(summary))
    return 0
