"""`morph analyze` end to end: files in, summary + JSON report + overlay out, bad files reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from morph_cli.main import main


@pytest.fixture
def field_files(tmp_path: Path, disc_field) -> list[Path]:
    paths = []
    for i in range(2):
        img, _ = disc_field(n=10, seed=i)
        p = tmp_path / f"field{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


def test_analyze_writes_report_and_overlay(tmp_path: Path, field_files, capsys) -> None:
    out_json = tmp_path / "out" / "report.json"
    out_png = tmp_path / "out" / "overlay.png"
    rc = main(["analyze", *map(str, field_files), "--json", str(out_json), "--overlay", str(out_png)])
    assert rc == 0
    report = json.loads(out_json.read_text())
    assert set(report) >= {"model", "images", "counts", "findings", "differentials"}
    assert len(report["images"]) == 2
    for im in report["images"]:
        assert {"path", "width", "height", "um_per_px", "median_rbc_diameter_um", "warnings", "cells"} <= set(im)
        assert im["width"] == 320 and im["height"] == 240
        rbcs = [c for c in im["cells"] if c["kind"] == "rbc"]
        assert len(rbcs) >= 8
        for c in im["cells"]:
            assert {"id", "x", "y", "bbox", "kind", "label", "confidence"} <= set(c)
            x0, y0, x1, y1 = c["bbox"]
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
    assert sum(report["counts"].values()) >= 16
    # one overlay per field when several
    overlays = sorted((tmp_path / "out").glob("overlay-*.png"))
    assert [p.name for p in overlays] == ["overlay-field0.png", "overlay-field1.png"]
    ov = Image.open(overlays[0])
    assert ov.size[0] > 320  # image plus legend panel
    assert "cells counted" in capsys.readouterr().out


def test_bad_field_is_reported_and_others_analysed(tmp_path: Path, field_files, capsys) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    out_json = tmp_path / "r.json"
    rc = main(["analyze", str(field_files[0]), str(bad), str(empty), "--json", str(out_json)])
    assert rc == 1  # some inputs failed
    report = json.loads(out_json.read_text())
    by_path = {im["path"]: im for im in report["images"]}
    assert by_path[str(bad)]["error"]["code"] == "not_an_image"
    assert by_path[str(empty)]["error"]["code"] == "empty_file"
    assert by_path[str(field_files[0])]["cells"]
    err = capsys.readouterr()
    assert "notes.jpg" in err.out + err.err


def test_blank_slide_gives_warning_not_crash(tmp_path: Path) -> None:
    p = tmp_path / "blank.png"
    Image.new("RGB", (320, 240), (225, 228, 232)).save(p)
    out_json = tmp_path / "r.json"
    assert main(["analyze", str(p), "--json", str(out_json)]) == 0
    report = json.loads(out_json.read_text())
    assert report["images"][0]["cells"] == []
    assert report["images"][0]["warnings"] or report["warnings"]


def test_usage_errors_exit_2(tmp_path: Path, field_files) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["analyze", str(field_files[0]), "--stain", "giemsa-xyz"])
    assert ei.value.code == 2
    ctx = tmp_path / "ctx.json"
    ctx.write_text("[1, 2]")
    assert main(["analyze", str(field_files[0]), "--context", str(ctx)]) == 2


def test_folder_argument_expands_to_images(tmp_path: Path, field_files) -> None:
    out_json = tmp_path / "r.json"
    assert main(["analyze", str(field_files[0].parent), "--json", str(out_json)]) == 0
    assert len(json.loads(out_json.read_text())["images"]) == 2


def test_localizer_option(tmp_path: Path, field_files, capsys) -> None:
    from morph.localize import build_untrained_localizer

    out = tmp_path / "r.json"
    assert main(["analyze", str(field_files[0]), "--localizer", "none", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["model"]["localizer"] == {"name": "hand-made seeds"}
    build_untrained_localizer("locnet_tiny").save(tmp_path / "myloc")
    assert main(["analyze", str(field_files[0]), "--localizer", str(tmp_path / "myloc"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["model"]["localizer"]["arch"] == "locnet_tiny"
    capsys.readouterr()
    assert main(["analyze", str(field_files[0]), "--localizer", str(tmp_path / "nowhere")]) != 0
    assert "nowhere" in capsys.readouterr().err
