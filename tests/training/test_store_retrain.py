"""Review -> export -> fine-tune -> evaluate: the lab's reviewed cells, exported by
``morph store export``, fine-tune the (tiny) model for one step, appear in its model card,
and ``morph evaluate`` measures the model's agreement with the reviewers per class."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from morph.classify import build_untrained
from morph.errors import MorphError
from morph.io import encode_png
from morph.pipeline import Analyzer
from morph.store import CaseInput, CaseStore, export_reviewed
from morph.synth import render_field
from morph_cli.main import main as morph_main
from training.train import get_args_parser
from training.train import main as train_main

REVIEWED = ("normal", "macrocyte", "teardrop")


def _reviewed_store(folder: Path) -> tuple[CaseStore, dict[str, int]]:
    """Two stored cases (one field each); in each, three cells relabelled and two confirmed."""
    store = CaseStore(folder)
    analyzer = Analyzer(classifier=build_untrained("morphnet_tiny"))
    per_class: dict[str, int] = {}
    for seed in (0, 1):
        image = render_field(seed, height=240, width=320).image
        report = analyzer.analyze_case([(f"field{seed}.png", image)]).to_dict()
        case_id = store.add_case(CaseInput(report, [encode_png(image)]))
        rbcs = [c for c in report["images"][0]["cells"] if c["kind"] == "rbc" and not c["touches_border"]]
        for cell, label in zip(rbcs[:3], REVIEWED, strict=True):
            store.review_cell(case_id, 0, cell["id"], reviewer="ann", label=label)
            per_class[label] = per_class.get(label, 0) + 1
        for cell in rbcs[3:5]:
            store.review_cell(case_id, 0, cell["id"], reviewer="bob", confirmed=True)
            per_class[cell["label"]] = per_class.get(cell["label"], 0) + 1
    return store, per_class


def test_export_finetune_and_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, per_class = _reviewed_store(tmp_path / "store")
    store.close()
    out = tmp_path / "export"
    assert morph_main(["store", "export", "--store", str(tmp_path / "store"), "--out", str(out)]) == 0
    with open(out / "annotations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:5] == ["image", "x", "y", "label", "confirmed"]
    assert len(rows) == 10 and sum(r["confirmed"] == "1" for r in rows) >= 4
    assert all((out / r["image"]).is_file() for r in rows) and len({r["image"] for r in rows}) == 2
    summary = json.loads((out / "export.json").read_text())
    assert summary["per_class"] == dict(sorted(per_class.items())) and summary["cases"] == 2

    init = tmp_path / "init"
    build_untrained("morphnet_tiny").save(init)
    cfg = {
        "name": "lab-tiny", "init_from": str(init), "epochs": 1, "batch_size": 4, "lr": 0.001,
        "val_fraction": 0.5, "threads": 1, "data_root": str(tmp_path),
        "data": [{"name": "lab-review", "format": "csv", "path": "export", "origin": "lab", "um_per_px": 0.178}],
        "synthetic": {"enabled": False},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    model = tmp_path / "model"
    metrics = train_main(get_args_parser().parse_args([
        "--config", str(tmp_path / "cfg.yaml"), "--out", str(model), "--run-dir", str(tmp_path / "run"),
        "--no-progress", "--max-steps", "1",
    ]))
    assert metrics["lab_confirmed_counts"] == dict(sorted(per_class.items()))
    card = (model / "MODEL_CARD.md").read_text()
    assert "fine-tuned from" in card and "lab-confirmed cells" in card
    for label, n in per_class.items():
        assert f"{label} {n}" in card  # the per-class line beside the real and synthetic ones
    assert "real: lab-review (lab-confirmed)" in card
    assert "| microcyte | untrained |" in card  # a class the export lacks keeps its starting provenance
    assert json.loads((model / "labels.json").read_text()) == build_untrained("morphnet_tiny").labels

    capsys.readouterr()
    assert morph_main(["evaluate", "--data", str(out), "--format", "csv", "--model", str(model),
                       "--um-per-px", "0.178", "--out", str(tmp_path / "eval.json")]) == 0
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["n"] == 10 and set(per_class) <= set(ev["per_class"])
    assert all(ev["per_class"][lab]["support"] == n for lab, n in per_class.items())
    printed = capsys.readouterr().out
    assert all(lab in printed for lab in per_class)


def test_export_of_a_store_without_reviews_is_a_clear_error(tmp_path: Path) -> None:
    store = CaseStore(tmp_path / "store")
    with pytest.raises(MorphError) as ei:
        export_reviewed(store, tmp_path / "out")
    assert ei.value.code == "empty_dataset" and "review" in ei.value.message
    assert not (tmp_path / "out" / "annotations.csv").exists()
    assert morph_main(["store", "export", "--store", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_the_example_finetune_config_starts_from_the_shipped_model() -> None:
    from training.train import REPO, load_config

    if not (REPO / "models" / "morphnet-v6" / "weights.pt").is_file():
        pytest.skip("the shipped model is not in models/")
    cfg = load_config(REPO / "training" / "configs" / "finetune-lab.yaml")
    assert cfg.init_from == "models/morphnet-v6" and cfg.arch == "morphnet"
    assert [s.origin for s in cfg.data] == ["public", "lab"]
    assert cfg.preprocessing().crop_size == 48
