"""``morph train --config CONFIG.yaml``: retrain a cell classifier and write its model folder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "train", help="train a cell classifier from labelled images (writes a model folder)",
        description="Train a cell classifier from a YAML config (see training/configs/): seeded, split by "
        "image, class-balanced, with checkpoints (--resume) and a complete model folder at the end.",
    )
    from training.args import add_train_arguments

    add_train_arguments(p)
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
