"""Command-line arguments of the training script, shared by ``python -m training.train`` and
``morph train`` (kept free of heavy imports so ``morph --help`` stays instant)."""

from __future__ import annotations

import argparse


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Add the training options to ``p``."""
    p.add_argument("--config", required=True, help="training config YAML (see training/configs/)")
    p.add_argument("--out", default=None, help="model folder to write (default: <run-dir>/model)")
    p.add_argument("--run-dir", default=None, help="checkpoints and resolved config (default: runs/<name>)")
    p.add_argument("--resume", action="store_true", help="resume from <run-dir>/checkpoint.pt")
    p.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many steps (smoke tests)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this many epochs, keeping the checkpoint (continue later with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
