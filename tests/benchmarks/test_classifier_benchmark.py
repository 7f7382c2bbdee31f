"""benchmarks/classifier.py end to end on a tiny untrained model and two Chula fields: the side-by-side
rows, the stain-shift section (shared with benchmarks/robustness.py) and the PASS/miss targets."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import classifier as bench
from morph.classify import build_untrained


def _model_folder(path: Path, val_images: list[int]) -> Path:
    clf = build_untrained("morphnet_tiny", seed=0)
    clf.metrics = {"train_time_s": 12.0, "device": "cpu"}
    clf.save(path)
    (path / "split.json").write_text(json.dumps({"seed": 0, "val_images": [f"chula-rbc-12:{s}" for s in val_images]}))
    return path


@pytest.mark.data
def test_side_by_side_run(chula_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stems = sorted(int(p.stem) for p in (chula_dir / "images").glob("*.jpg"))[:2]
    student = _model_folder(tmp_path / "student", stems)
    teacher = _model_folder(tmp_path / "teacher", stems)
    out = tmp_path / "bench.json"
    rc = bench.main(["--model", str(student), "--teacher", str(teacher), "--baseline", str(tmp_path / "absent"),
                     "--data", str(chula_dir.parent), "--speed-crops", "32", "--threads", "1", "--no-synthetic",
                     "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "baseline skipped" in text and "the same 2 Chula images" in text
    res = json.loads(out.read_text())
    assert [r["role"] for r in res["rows"]] == ["student", "teacher"]
    for r in res["rows"]:
        # the shift section cuts its own crops (robustness.py's code): clean must agree with the headline
        assert r["shifts"]["n_crops"] == r["n_val"] > 0
        assert r["shifts"]["clean"] == pytest.approx(r["accuracy"])
        assert set(r["shifts"]["per_shift"]) == {s.name for s in bench.robustness.STAIN_SHIFTS[1:]}
        assert r["crops_per_s_1thread"] > 0 and r["weights_mb"] > 0 and r["train_time_s"] == 12.0
    assert {(t["role"], t["metric"]) for t in res["targets"]} >= {("student", "crops_per_s_1thread"),
                                                                   ("teacher", "stain_worst_drop")}
    assert all(not t["ok"] for t in res["targets"] if t["metric"] == "macro_f1")  # an untrained net misses
    assert "PASS" in text or "miss" in text


def test_split_mismatch_is_reported(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, stems in ((a, [1, 2, 3]), (b, [2, 3, 4])):
        folder.mkdir()
        (folder / "split.json").write_text(json.dumps({"val_images": [f"chula-rbc-12:{s}" for s in stems]}))
    stems, line = bench.common_val_stems([("student", SimpleNamespace(folder=a)), ("teacher", SimpleNamespace(folder=b))])
    assert stems == [2, 3] and "DIFFER" in line


def test_targets_pass_and_miss() -> None:
    rows = [{"role": "student", "macro_f1": 0.9, "accuracy": 0.91, "teardrop_f1": None, "ece": 0.02,
             "crops_per_s_1thread": 2500, "stain_worst_drop": 0.031}]
    got = {t["metric"]: t["ok"] for t in bench.check_targets(rows)}
    assert got == {"macro_f1": True, "accuracy": False, "teardrop_f1": False, "ece": True,
                   "crops_per_s_1thread": True, "stain_worst_drop": False}


def test_synthetic_verdict() -> None:
    t = {"reticulocyte_nmb": {"precision": 0.99, "recall": 1.0, "support": 10},
         "megaloblast_vs_normoblast_f1": 0.96, "hypersegmented_neutrophil_f1": 1.0}
    assert bench.synthetic_ok(t)
    assert not bench.synthetic_ok({**t, "megaloblast_vs_normoblast_f1": None})
