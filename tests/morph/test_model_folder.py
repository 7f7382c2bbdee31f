"""morph.model_folder: one way to find, check and read any model folder (classifier, localizer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from morph.errors import MorphError
from morph.model_folder import ModelFolder, models_dir, resolve_folder


def _folder(root: Path, name: str = "m", config: object = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"arch": "x"} if config is None else config))
    torch.save({"weight": torch.ones(2, 2)}, d / "weights.pt")
    return d


def test_a_folder_is_found_by_path_by_name_and_by_default(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MORPH_MODELS_DIR", str(tmp_path))
    d = _folder(tmp_path, "mine")
    assert models_dir() == tmp_path
    assert resolve_folder(d, "other") == d
    assert resolve_folder("mine", "other") == tmp_path / "mine"
    assert resolve_folder(None, "mine") == tmp_path / "mine"
    with pytest.raises(MorphError) as e:
        resolve_folder("nowhere", "mine", "localizer")
    assert e.value.code == "model_not_found" and "localizer" in e.value.message
    with pytest.raises(MorphError) as e:
        resolve_folder(None, "absent")
    assert e.value.code == "model_not_found" and "absent" in e.value.message


def test_errors_name_the_file_at_fault(tmp_path) -> None:
    d = _folder(tmp_path)
    with pytest.raises(MorphError) as e:
        ModelFolder.open(d, "x", "localizer", required=("config.json", "labels.json"))
    assert e.value.code == "bad_model" and e.value.path == str(d / "labels.json")
    assert "localizer folder is missing labels.json" in e.value.message
    folder = ModelFolder.open(d, "x")
    assert folder.config() == {"arch": "x"}
    assert folder.read_optional("metrics.json") is None
    (d / "config.json").write_text("[1, 2]")
    with pytest.raises(MorphError) as e:
        folder.config()
    assert e.value.code == "bad_model" and e.value.path.endswith("config.json")
    with pytest.raises(MorphError) as e:
        folder.load_weights(torch.nn.Linear(3, 3))
    assert e.value.code == "bad_model" and e.value.path.endswith("weights.pt")
    net = torch.nn.Module()
    net.weight = torch.nn.Parameter(torch.zeros(2, 2))
    folder.load_weights(net)
    assert float(net.weight.detach().sum()) == 4.0
