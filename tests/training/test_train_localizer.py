"""Localizer training: a tiny centre-map network on a tiny YOLO data set plus rendered fields
(and a tiny bcd-256-style source) writes a loadable folder with tuned peak rules; the loss,
targets and the mix of sources behave."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from morph.io import write_image
from morph.localize import load_localizer
from morph.synth import render_field
from training.train_localizer import (
    Defocus,
    Mixer,
    Sample,
    _heatmap,
    _stain_mix,
    bcd256_boxes,
    focal_loss,
    main,
    make_batch,
    parse_blur,
    parse_range,
)


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
        "--threads", "1", "--tune-fields", "1", "--out", str(out), "--no-progress", "--bcd", "none",
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


def _bcd(root: Path) -> Path:
    """A bcd-256-style folder: fields 1-4 (3 is in the held-out test part), rbc and wbc boxes."""
    (root / "images").mkdir(parents=True)
    rows = ["image_id,image,xmin,ymin,xmax,ymax,label"]
    for num in (1, 2, 3, 4):
        f = render_field(20 + num, height=256, width=256, um_per_px=0.15)
        write_image(root / "images" / f"image-{num}.png", f.image)
        for c in f.cells:
            if c.kind in ("rbc", "nucleated"):
                x0, y0, x1, y1 = np.clip(c.bbox, 0, 256) / 256
                rows.append(f"{num},image-{num}.png,{x0},{y0},{x1},{y1},{'rbc' if c.kind == 'rbc' else 'wbc'}")
    (root / "annotations.csv").write_text("\n".join(rows) + "\n")
    return root


def test_bcd256_source_never_yields_the_test_part(tmp_path: Path) -> None:
    train, val = bcd256_boxes(_bcd(tmp_path / "bcd"), ("rbc", "nucleated", "platelet"), val_every=3)
    names = sorted(Path(p).name for p in [*train, *val])
    assert names == ["image-1.png", "image-2.png", "image-4.png"]  # image-3: test part
    assert [Path(p).name for p in val] == ["image-4.png"]
    boxes = next(iter(train.values()))
    assert len(boxes["rbc"]) > 2 and boxes["platelet"].shape == (0, 4)


def _sample(source: str, unlabelled: tuple[str, ...] = ()) -> Sample:
    od = np.full((3, 40, 40), 0.3, np.float16)
    c = {"rbc": np.array([[20.0, 20.0]]), "platelet": np.array([[5.0, 5.0]])}
    return Sample(od, c, 8.0, 1, {}, source, source, unlabelled)


def test_mixer_gives_each_source_its_share_and_unboxed_kinds_no_loss() -> None:
    samples = [_sample("txl") for _ in range(50)] + [_sample("bcd", ("platelet",))]
    mixer = Mixer(samples, {"txl": 0.6})
    assert dict(zip(mixer.sources, mixer.p, strict=True)) == {"txl": 0.6, "bcd": pytest.approx(0.4)}
    rng = np.random.default_rng(0)
    assert 300 < sum(mixer.draw(rng).source == "bcd" for _ in range(1000)) < 500
    _, t, w = make_batch(Mixer([_sample("bcd", ("platelet",))], {}), rng, 2, 32, ("rbc", "platelet"))
    assert w.shape == t.shape and w[:, 1].sum() == 0 and w[:, 0].sum() > 0


def test_blur_option_sets_the_defocus_augmentation() -> None:
    assert parse_blur("0.3:0.5-1.5") == Defocus()
    assert parse_blur("1:2-2") == Defocus(1.0, (2.0, 2.0))
    for bad in ("0.3", "2:0.5-1", "0.5:1.5-0.5", "a:b-c"):
        with pytest.raises(SystemExit, match="--blur"):
            parse_blur(bad)
    # every crop blurred: a one-pixel spot spreads
    spot = _sample("txl")
    spot.od[:] = 0
    spot.od[:, 20, 20] = 1.0
    rng = np.random.default_rng(0)
    sharp, _, _ = make_batch(Mixer([spot], {}), rng, 1, 40, ("rbc",), Defocus(0.0))
    soft, _, _ = make_batch(Mixer([spot], {}), np.random.default_rng(0), 1, 40, ("rbc",), Defocus(1.0, (2.0, 2.0)))
    assert float(soft.max()) < 0.5 * float(sharp.max())


def test_scale_jitter_option_sets_how_large_the_cells_appear() -> None:
    assert parse_range("--scale-jitter", "0.7-1.4") == (0.7, 1.4)
    for bad in ("0.7", "1.4-0.7", "0-1", "a-b"):
        with pytest.raises(SystemExit, match="--scale-jitter"):
            parse_range("--scale-jitter", bad)

    def target_width(scale: float) -> int:
        # the red cell's centre target: its Gaussian grows with the cell as the crop magnifies it
        # (magnified, the crop holds a part of the field: the largest over a few crops)
        _, t, _ = make_batch(Mixer([_sample("txl")], {}), np.random.default_rng(0), 6, 40, ("rbc",),
                             scale_jitter=(scale, scale))
        return int((t[:, 0] > 0.5).sum(dim=(1, 2)).max())

    assert target_width(2.0) > 2 * target_width(1.0)


def test_tiny_training_run_with_a_bcd256_source(tmp_path: Path) -> None:
    data, bcd = _yolo(tmp_path / "yolo"), _bcd(tmp_path / "bcd")
    out = tmp_path / "loc"
    rc = main([
        "--yolo", str(data), "--classes", "1=rbc,0=nucleated", "--synth", "1", "--synth-val", "1",
        "--bcd", str(bcd), "--bcd-val-every", "3", "--ring", "2", "--ring-val", "1",
        "--mix", "yolo=0.5,bcd-256=0.3", "--arch", "locnet_tiny", "--epochs", "1", "--steps", "2",
        "--batch", "2", "--crop", "64", "--threads", "1", "--tune-fields", "1", "--out", str(out), "--no-progress",
    ])
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["provenance"]["sources"] == {"yolo": 2, "bcd-256": 2, "rendered": 1, "ring": 2}
    assert "bcd-256" in cfg["provenance"]["held_out"]
    grid = json.loads((out / "metrics.json").read_text())["threshold_search"]["rbc"]["grid"]
    assert {"yolo", "bcd-256"} <= set(grid[0])


def test_stain_mix_changes_hue_not_how_much_stain() -> None:
    """The dye-mix augmentation moves density between channels (what per-channel gains cannot)
    but keeps each pixel's total: a turned hue or a changed saturation is the same amount of stain."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0.2, 1.0, size=(3, 8, 8)).astype(np.float32))
    changed = 0
    for _ in range(20):
        y = _stain_mix(x, rng)
        assert y.shape == x.shape and bool((y >= 0).all())
        torch.testing.assert_close(y.sum(0), x.sum(0), atol=0.05, rtol=0.0)  # clamping aside
        changed += not torch.equal(y, x)
    assert changed >= 10  # each of the two changes on half the crops


def test_overlap_source_renders_crowded_deeply_overlapping_cells() -> None:
    # --overlap fields: seeds from OVERLAP_SEED0, their own batch source, pairs closer than the
    # ordinary renders ever draw them (under 0.6 of the summed radii), as in bcd-256
    from training.train_localizer import OVERLAP_SEED0, _synth_boxes, _synth_source

    assert _synth_source(OVERLAP_SEED0 + 3) == "overlap" and _synth_source(OVERLAP_SEED0 - 1) == "ring"
    image, boxes = _synth_boxes(OVERLAP_SEED0 + 1, ("rbc",))
    b = boxes["rbc"]
    c = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)
    d = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    full = (b[:, 0] > 0) & (b[:, 1] > 0) & (b[:, 2] < image.shape[1]) & (b[:, 3] < image.shape[0])
    i, j = np.triu_indices(len(b), 1)
    keep = full[i] & full[j]
    depth = np.hypot(*(c[i] - c[j]).T)[keep] / ((d[i] + d[j]) / 2)[keep]
    assert len(b) >= 60 and (depth < 0.6).sum() >= 3
