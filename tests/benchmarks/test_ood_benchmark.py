"""benchmarks/ood.py end to end on a tiny untrained model and four Chula validation fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import ood as bench
from morph.classify import build_untrained
from morph.evaluation import OOD_FIELD_OBJECTS
from morph.synth import OOD_OBJECTS


@pytest.mark.data
def test_ood_table(chula_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stems = sorted(int(p.stem) for p in (chula_dir / "images").glob("*.jpg"))[:4]
    folder = build_untrained("morphnet_tiny", seed=0).save(tmp_path / "m")
    (folder / "split.json").write_text(json.dumps({"val_images": [f"chula-rbc-12:{s}" for s in stems]}))
    out = tmp_path / "ood.json"
    assert bench.main(["--model", str(folder), "--data", str(chula_dir.parent), "--n", "3", "--threads", "1",
                       "--max-reject", "0.05", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fitted HERE" in text
    res = json.loads(out.read_text())
    assert res["fitted_here"] and set(res["rows"]) == {"in-distribution: Chula val", *OOD_OBJECTS, *OOD_FIELD_OBJECTS}
    assert res["rows"]["in-distribution: Chula val"]["ood"] <= 0.05
    assert all(r["n"] == 3 for k, r in res["rows"].items() if k in OOD_OBJECTS)
