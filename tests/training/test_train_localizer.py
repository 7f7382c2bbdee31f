"""Localizer training: a tiny centre-map network on a tiny YOLO data set plus rendered fields
writes a loadable folder with tuned peak rules; the loss and targets behave."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from morph.io import write_image
from morph.localize import load_localizer
from morph.synth import render_field
from training.train_localizer import _heatmap, focal_loss, main


def _yolo(root: Path) -> Path:
    for split, seeds in (("train", (11, 12)), ("val", (13,))):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for s in seeds:
            f = render_field(s, height=240, width=320)
            H, W = f.image.shape[:2]
            write_image(root / "images" / split / f"{s}.png", f.image)
            lines = []
            for c in f.cells:
                x0, y0, x1, y1 = np.clip(c.bbox, 0, [W, H, W, H])
                cls = 1 if c.kind == "rbc" else 0
                lines.append(f"{cls} {(x0 + x1) / 2 / W} {(y0 + y1) / 2 / H} {(x1 - x0) / W} {(y1 - y0) / H}")
            (root / "labels" / split / f"{s}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_heatmap_and_focal_loss() -> None:
    t = _heatmap(np.array([[5.0, 4.0], [-3.0, 2.0]]), (10, 12), sigma=1.0)
    assert t.shape == (10, 12) and t[4, 5] == 1.0 and (t >= 0.999).sum() == 1  # off-map centre ignored
    target = torch.from_numpy(t)[None, None]
    w = torch.ones_like(target)
    good = torch.where(target >= 0.999, 6.0, -6.0)
    bad = torch.where(target >= 0.999, -6.0, 6.0)
    assert focal_loss(good, target, w) < 0.01 < focal_loss(bad, target, w)
    assert focal_loss(bad, target, torch.zeros_like(w)) == 0  # masked out: no loss


def test_tiny_training_run_writes_a_loadable_folder(tmp_path: Path) -> None:
    data = _yolo(tmp_path / "yolo")
    out = tmp_path / "loc"
    rc = main([
        "--yolo", str(data), "--classes", "1=rbc,0=nucleated", "--synth", "2", "--synth-val", "1",
        "--arch", "locnet_tiny", "--epochs", "2", "--steps", "2", "--batch", "2", "--crop", "64",
        "--threads", "1", "--tune-fields", "1", "--out", str(out), "--no-progress",
    ])
    assert rc == 0
    det = load_localizer(out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "locnet_tiny" and 0 < det.threshold < 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and metrics["threshold_search"]["rbc"]["fields"] == 1
    assert det.kinds == ("rbc", "nucleated", "platelet") and set(det.thresholds) == set(det.kinds)
    assert metrics["train_fields"] == 4 and metrics["val_fields"] == 2
    assert "Chula" in cfg["provenance"]["held_out"]
