"""Training: a tiny model for a couple of steps on a tiny data set writes a complete,
loadable model folder; resume; bad items are skipped and counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from morph.classify import load_model
from morph.errors import MorphError
from morph.io import write_image
from training.train import get_args_parser, load_config, main


def _dataset(root: Path, n_images: int = 6) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.mgrid[:160, :200]
    for i in range(n_images):
        img = np.full((160, 200, 3), 215, np.uint8)
        lines = []
        for j, (x, y) in enumerate([(50, 50), (140, 60), (60, 120), (150, 125)]):
            cls = (i + j) % 3  # normal, macrocyte, microcyte
            r = {0: 22, 1: 28, 2: 16}[cls]
            img[(xx - x) ** 2 + (yy - y) ** 2 < r * r] = (190, 100, 120)
            lines.append(f"{x} {y} {cls}")
        img = np.clip(img + rng.integers(-6, 6, img.shape), 0, 255).astype(np.uint8)
        write_image(root / "images" / f"{i}.png", img)
        (root / "labels" / f"{i}.txt").write_text("\n".join(lines) + "\n")
    return root


def _config(tmp: Path, data: Path, **extra: object) -> Path:
    cfg = {
        "name": "tiny", "arch": "morphnet_tiny", "epochs": 2, "batch_size": 8, "lr": 0.01,
        "val_fraction": 0.34, "threads": 1, "data_root": str(data.parent),
        "data": [{"name": "toy", "format": "chula", "path": data.name}],
        "synthetic": {"enabled": False},
    }
    cfg.update(extra)
    import yaml

    p = tmp / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _args(cfg: Path, tmp: Path, *more: str) -> object:
    return get_args_parser().parse_args(
        ["--config", str(cfg), "--out", str(tmp / "model"), "--run-dir", str(tmp / "run"), "--no-progress", *more]
    )


def test_two_epochs_write_a_complete_model_folder(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d" / "toy")
    m = main(_args(_config(tmp_path, data), tmp_path, "--max-steps", "2"))
    out = tmp_path / "model"
    for f in ("config.json", "labels.json", "preprocessing.json", "thresholds.json", "weights.pt",
              "metrics.json", "confusion_matrix.png", "MODEL_CARD.md", "split.json", "training_config.yaml"):
        assert (out / f).is_file(), f
    for k in ("accuracy", "macro_f1", "per_class", "ece"):
        assert k in m
    assert set(m["per_class"]) >= {"normal", "macrocyte", "microcyte"}
    split = json.loads((out / "split.json").read_text())
    assert split["unit"] == "image" and not set(split["train_images"]) & set(split["val_images"])
    clf = load_model(out)
    assert clf.labels == ["normal", "macrocyte", "microcyte"]
    assert (tmp_path / "run" / "config.yaml").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()
    # the split is fixed by the seed
    main(_args(_config(tmp_path, data), tmp_path / "again", "--max-steps", "1"))
    assert json.loads((tmp_path / "again" / "model" / "split.json").read_text()) == split


def test_glass_balanced_training_crops_match_inference(tmp_path: Path) -> None:
    """A model trained with ``glass_level`` cuts its training crops the way inference does: its
    crops' normalisation statistics are those of glass-balanced crops, and the folder says so."""
    data = _dataset(tmp_path / "d" / "toy")
    main(_args(_config(tmp_path, data, glass_level=200), tmp_path, "--max-steps", "1"))
    clf = load_model(tmp_path / "model")
    assert clf.preprocessing.glass_level == 200
    # the toy glass is grey 215: balanced to 200, every channel of the crops is 200/215 as bright
    main(_args(_config(tmp_path, data), tmp_path / "plain", "--max-steps", "1"))
    plain = load_model(tmp_path / "plain" / "model")
    assert plain.preprocessing.glass_level == 0
    ratio = np.array(clf.preprocessing.mean) / np.array(plain.preprocessing.mean)
    assert np.allclose(ratio, 200 / 215, atol=0.015)


def test_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d" / "toy")
    cfg = _config(tmp_path, data)
    first = main(_args(cfg, tmp_path, "--max-steps", "2", "--epochs", "3", "--stop-after", "2"))
    assert first["stopped_after_epoch"] == 2 and not (tmp_path / "model").exists()
    m = main(_args(cfg, tmp_path, "--max-steps", "2", "--epochs", "3", "--resume"))
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert (tmp_path / "model" / "weights.pt").is_file()
    with pytest.raises(MorphError) as ei:  # a different schedule cannot be resumed
        main(_args(cfg, tmp_path, "--max-steps", "2", "--epochs", "5", "--resume"))
    assert ei.value.code == "bad_config"


def test_resume_without_checkpoint_is_clear(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d" / "toy")
    with pytest.raises(MorphError) as ei:
        main(_args(_config(tmp_path, data), tmp_path, "--resume"))
    assert ei.value.code == "file_not_found" and "checkpoint" in ei.value.message


def test_bad_items_are_skipped_and_counted(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "d" / "toy")
    (data / "images" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupt image
    with open(data / "labels" / "0.txt", "a") as fh:
        fh.write("900 900 0\n5 5 42\n")  # outside the image, unknown class
    m = main(_args(_config(tmp_path, data), tmp_path, "--max-steps", "1", "--epochs", "1"))
    assert m["skipped_items"] == 3
    skipped = (tmp_path / "run" / "skipped.txt").read_text()
    assert "3.png" in skipped and "0.txt:5" in skipped and "0.txt:6" in skipped


def test_empty_data_and_bad_config(tmp_path: Path) -> None:
    empty = tmp_path / "d" / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    with pytest.raises(MorphError) as ei:
        main(_args(_config(tmp_path, empty), tmp_path))
    assert ei.value.code == "empty_dataset" and "empty" in (ei.value.path or "")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nno_such_key: 1\n")
    with pytest.raises(MorphError) as ei:
        load_config(bad)
    assert ei.value.code == "bad_config" and "no_such_key" in ei.value.message


def test_shipped_configs_parse() -> None:
    root = Path(__file__).resolve().parents[2] / "training" / "configs"
    for p in sorted(root.glob("*.yaml")):
        cfg = load_config(p)
        assert cfg.crop_size > 0 and cfg.data


def test_recalibrate_for_tta_keeps_weights_and_refits(tmp_path: Path) -> None:
    from training.calibrate import recalibrate

    data = _dataset(tmp_path / "d" / "toy")
    main(_args(_config(tmp_path, data), tmp_path, "--max-steps", "2"))
    out = tmp_path / "model"
    before = load_model(out)
    old = json.loads((out / "metrics.json").read_text())
    old["distillation"] = {"teacher": "teacher-lite0-v1"}  # a distilled student's: the card reads it
    (out / "metrics.json").write_text(json.dumps(old))
    m = recalibrate(out, "flips", progress=False)
    after = load_model(out)
    assert after.preprocessing.tta == "flips" and m["temperature"] == round(after.temperature, 4)
    assert m["train_time_s"] == old["train_time_s"] and m["history"] == old["history"]
    assert m["distillation"] == old["distillation"]
    crops = np.random.default_rng(0).integers(0, 255, (3, 48, 48, 3), dtype=np.uint8)
    before.preprocessing = after.preprocessing
    assert np.allclose(before.logits(crops), after.logits(crops))  # same weights
    assert "tta: flips" in (out / "training_config.yaml").read_text()
    with pytest.raises(MorphError) as ei:
        load_config(_config(tmp_path, data, tta="spin"))
    assert ei.value.code == "bad_config"


def test_rendered_validation_crops_are_glass_balanced_as_at_inference() -> None:
    """Rendered crops were cut unbalanced while real ones were balanced: the network could tell
    the synthetic classes by their glass, and at inference (balanced) read them differently."""
    from morph.segment import field_glass
    from training.train import _render_field_crops

    job = (500_000_001, "nmb", 48, 0.2967, 1.6, 0, 0.178)
    balanced, _, _, _ = _render_field_crops((*job, 200.0))
    plain, _, _, _ = _render_field_crops((*job, 0.0))
    assert np.allclose(field_glass(balanced.reshape(-1, 48, 3)), 200, atol=4)
    assert not np.allclose(field_glass(plain.reshape(-1, 48, 3)), 200, atol=4)
