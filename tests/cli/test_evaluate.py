"""``morph evaluate``: metrics JSON + confusion PNG, points and pipeline modes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from morph.classify import build_untrained
from morph.io import write_image
from morph_cli.main import main


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    clf = build_untrained("morphnet_tiny", seed=0)
    clf.thresholds = {"global": 0.0, "per_class": {}}
    return clf.save(tmp_path / "tiny")


def _folder_data(root: Path) -> Path:
    from morph.synth import render_cell_crop

    for i, lab in enumerate(("normal", "teardrop", "neutrophil")):
        (root / lab).mkdir(parents=True)
        for k in range(3):
            write_image(root / lab / f"{k}.png", render_cell_crop(10 * i + k, lab, size=48))
    return root


def test_evaluate_folder_format(tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _folder_data(tmp_path / "crops")
    out = tmp_path / "res" / "metrics.json"
    rc = main(["evaluate", "--data", str(data), "--format", "folder", "--model", str(tiny_model), "--out", str(out)])
    assert rc == 0
    m = json.loads(out.read_text())
    for k in ("accuracy", "macro_f1", "per_class", "ece", "confusion_matrix"):
        assert k in m
    assert m["n"] == 9
    assert set(m["per_class"]) >= {"normal", "teardrop", "neutrophil"}
    for v in m["per_class"].values():
        assert set(v) == {"precision", "recall", "f1", "support"}
    assert sum(map(sum, m["confusion_matrix"]["matrix"])) == 9
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "macro-F1" in capsys.readouterr().out


def _points_data(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.mgrid[:200, :260]
    img = np.full((200, 260, 3), 215, np.uint8)
    lines = []
    for x, y in [(60, 60), (180, 70), (90, 140)]:
        img[(xx - x) ** 2 + (yy - y) ** 2 < 22**2] = (185, 95, 120)
        lines.append(f"{x} {y} 0")
    write_image(root / "images" / "1.png", img)
    (root / "labels" / "1.txt").write_text("\n".join(lines) + "\n999 5 0\n")
    return root


def test_evaluate_points_and_pipeline(tmp_path: Path, tiny_model: Path) -> None:
    data = _points_data(tmp_path / "toy")
    for mode in ("points", "pipeline"):
        out = tmp_path / f"{mode}.json"
        rc = main(["evaluate", "--data", str(data), "--format", "chula", "--mode", mode,
                   "--model", str(tiny_model), "--out", str(out)])
        assert rc == 0
        m = json.loads(out.read_text())
        assert m["n"] == 3 and m["skipped"] == 1 and m["mode"] == mode
    assert "detection" in m and 0 <= m["detection"]["point_recall"] <= 1


def test_evaluate_bad_input(tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir()
    rc = main(["evaluate", "--data", str(tmp_path / "empty"), "--format", "chula", "--model", str(tiny_model),
               "--out", str(tmp_path / "m.json")])
    assert rc != 0
    err = capsys.readouterr().err
    assert "empty" in err and "empty_dataset" in err
    rc = main(["evaluate", "--data", str(tmp_path), "--format", "folder", "--model", str(tmp_path / "missing"),
               "--out", str(tmp_path / "m.json")])
    assert rc != 0 and "model_not_found" in capsys.readouterr().err
