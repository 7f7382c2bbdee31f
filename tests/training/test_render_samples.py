"""sample_images/ is regenerable: the manifest matches the files and the renderer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from morph.io import read_image
from tests.helpers import REPO
from training.render_samples import SAMPLES, get_args_parser, main, render_sample

MANIFEST = REPO / "sample_images" / "manifest.json"


def _manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.skip("sample_images/manifest.json not present")
    return json.loads(MANIFEST.read_text())


def test_manifest_lists_every_sample_and_they_read_back() -> None:
    m = _manifest()
    assert m["synthetic"] is True
    names = {e["file"] for e in m["images"]}
    assert names == {f"{k}.jpg" for k in SAMPLES}
    for e in m["images"]:
        img = read_image(MANIFEST.parent / e["file"])
        assert img.shape == (e["height"], e["width"], 3)
        assert e["synthetic"] is True and e["cells"]
        assert sum(e["counts"].values()) == len(e["cells"])


def test_manifest_truth_is_what_the_renderer_gives() -> None:
    m = _manifest()
    e = next(x for x in m["images"] if x["file"] == "nmb_reticulocytes_01.jpg")
    f = render_sample("nmb_reticulocytes_01", e["um_per_px"])
    assert [c.to_dict() for c in f.cells] == e["cells"]


def test_script_writes_images_and_manifest(tmp_path: Path) -> None:
    args = get_args_parser().parse_args(["--out", str(tmp_path), "--only", "blood_normal_01"])
    assert main(args) == 0
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert [e["file"] for e in m["images"]] == ["blood_normal_01.jpg"]
    assert (tmp_path / "blood_normal_01.jpg").stat().st_size > 10_000
    assert "synthetic" in (tmp_path / "MANIFEST.md").read_text()
