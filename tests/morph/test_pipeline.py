"""The Analyzer engine: case assembly, per-field failures, counts and overlays."""

from __future__ import annotations

import numpy as np
import pytest

from morph.errors import MorphError
from morph.io import encode_png, write_image
from morph.labels import UNCLASSIFIED
from morph.overlay import label_color, render_overlay
from morph.pipeline import (
    AnalysisOptions,
    Analyzer,
    build_analyzer,
    count_cells,
    load_localizer,
    model_choice,
)
from morph.segment.warnings import warning_code


def test_case_keeps_bad_fields_and_analyses_the_rest(disc_field) -> None:
    img, centres = disc_field(n=8)
    bad = MorphError("truncated_image", "image data is truncated", path="b.jpg")
    report = Analyzer().analyze_case([("a.png", img), ("b.jpg", bad)], AnalysisOptions())
    assert [f.path for f in report.images] == ["a.png", "b.jpg"]
    assert report.images[1].error["code"] == "truncated_image"
    assert report.images[0].error is None and len(report.images[0].cells) >= len(centres) - 1
    assert report.counts.get(UNCLASSIFIED, 0) == sum(
        1 for c in report.images[0].cells if not c.touches_border
    )
    assert any("b.jpg" in w for w in report.warnings)
    assert report.disclaimer
    d = report.to_dict()
    assert d["images"][1]["error"]["code"] == "truncated_image"


def test_all_fields_bad_still_returns_a_report() -> None:
    bad = MorphError("empty_file", "empty", path="x.png")
    report = Analyzer().analyze_case([("x.png", bad)])
    assert report.counts == {} and any("no field" in w for w in report.warnings)


@pytest.mark.parametrize("kw", [{"stain": "giemsa"}, {"um_per_px": 50.0}, {"um_per_px": -1.0}])
def test_bad_options_are_rejected(kw) -> None:
    with pytest.raises(MorphError) as ei:
        AnalysisOptions(**kw).validate()
    assert ei.value.code == "bad_request"


def test_stated_scale_is_used_for_sizes(disc_field) -> None:
    img, _ = disc_field(n=6)
    a = Analyzer().analyze_field(img, "a", AnalysisOptions(um_per_px=0.1))
    b = Analyzer().analyze_field(img, "a", AnalysisOptions(um_per_px=0.2))
    assert b.median_rbc_diameter_um == pytest.approx(2 * a.median_rbc_diameter_um)
    assert b.um_per_px == 0.2


def test_case_without_a_scale_says_when_it_estimated_one(disc_field) -> None:
    big, _ = disc_field(n=8, h=400, w=520, radius=40)  # 14 um cells at the default scale: another camera
    analyzer = Analyzer(localizer=None)
    guessed = analyzer.analyze_case([("big.png", big)], AnalysisOptions())
    assert guessed.images[0].scale_source == "estimated"
    assert guessed.images[0].median_rbc_diameter_um == pytest.approx(7.5, abs=0.05)
    scale = guessed.findings["scale"]
    assert scale["source"] == "estimated" and scale["fields_estimated"] == 1
    assert scale["um_per_px"] == pytest.approx(guessed.images[0].um_per_px, rel=1e-3)
    assert any("give um_per_px" in w for w in guessed.findings["warnings"])
    assert guessed.to_dict()["images"][0]["scale_source"] == "estimated"
    stated = analyzer.analyze_case([("big.png", big)], AnalysisOptions(um_per_px=0.178))
    assert stated.images[0].scale_source == "stated" and stated.findings["scale"]["source"] == "stated"
    assert stated.images[0].median_rbc_diameter_um > 13
    small, _ = disc_field(n=6)
    plain = analyzer.analyze_case([("small.png", small)], AnalysisOptions())
    assert {k: plain.findings["scale"][k] for k in ("um_per_px", "source")} == {"um_per_px": 0.178, "source": "default"}
    # the default is an assumption the report states: another lab's cells can measure plausibly
    # at it and still be read as macrocytes (bcd-256: 8.8-9.4 um)
    assert any("default 0.178 um/px" in w and "give um_per_px" in w for w in plain.findings["warnings"])
    assert not any("default" in w for w in stated.findings["warnings"])


def test_fields_of_a_case_share_one_scale(disc_field) -> None:
    """One microscope, one scale: two fields whose cells measure 10.3 and 9.4 um at the default
    scale were measured at two scales (the first estimated, the second kept: its cells then read
    as "macrocytes"); with no scale stated they now share one, from their cells pooled. A field
    at another magnification keeps its own."""
    a, _ = disc_field(n=8, h=400, w=520, radius=29, seed=1)  # ~10.3 um at 0.178: implausible
    b, _ = disc_field(n=8, h=400, w=520, radius=26, seed=2)  # ~9.3 um: plausible on its own
    far, _ = disc_field(n=6, h=400, w=520, radius=40, seed=3)  # another objective
    analyzer = Analyzer(localizer=None)
    alone = [analyzer.analyze_case([(n, im)], AnalysisOptions()).images[0] for n, im in (("a", a), ("b", b))]
    assert [f.scale_source for f in alone] == ["estimated", "default"]
    case = analyzer.analyze_case([("a", a), ("b", b), ("far", far)], AnalysisOptions())
    fa, fb, ff = case.images
    assert fa.scale_source == fb.scale_source == "estimated" and fa.um_per_px == fb.um_per_px
    assert alone[1].um_per_px > fa.um_per_px > alone[0].um_per_px * 0.9
    assert any("the case's 2 fields" in w for w in fb.warnings)
    assert "implausible_size" not in {warning_code(w) for w in fb.warnings}
    assert ff.um_per_px == pytest.approx(analyzer.analyze_case([("far", far)]).images[0].um_per_px)
    stated = analyzer.analyze_case([("a", a), ("b", b)], AnalysisOptions(um_per_px=0.178))
    assert {f.um_per_px for f in stated.images} == {0.178}


def test_count_cells_excludes_border_cells(disc_field) -> None:
    img, _ = disc_field(n=6)
    f = Analyzer().analyze_field(img, "a", AnalysisOptions())
    before = sum(count_cells([f]).values())
    assert before == sum(1 for c in f.cells if not c.touches_border)
    inner = next(c for c in f.cells if not c.touches_border)
    inner.touches_border = True
    assert sum(count_cells([f]).values()) == before - 1


def test_overlay_draws_outlines_and_legend(disc_field) -> None:
    img, _ = disc_field(n=6)
    f = Analyzer().analyze_field(img, "a", AnalysisOptions())
    ov = render_overlay(img, f)
    assert ov.shape[0] >= img.shape[0] and ov.shape[1] > img.shape[1]
    colour = np.array(label_color(UNCLASSIFIED), np.uint8)
    assert (ov[: img.shape[0], : img.shape[1]] == colour).all(axis=-1).sum() > 50
    assert render_overlay(img, f, legend=False).shape == img.shape


# -- one entry point per case and one model-choice vocabulary -------------------------------------
def test_run_case_reads_paths_bytes_and_arrays_with_errors_kept(disc_field, tmp_path) -> None:
    img, _ = disc_field(n=6)
    path = tmp_path / "a.png"
    write_image(path, img)
    analyzer = Analyzer(localizer=None)
    inputs = [str(path), ("b.png", encode_png(img)), ("c", img), ("bad.jpg", b"not an image"),
              ("shown.png", tmp_path / "missing.png")]
    result = analyzer.run_case(inputs, AnalysisOptions(), overlays=True)
    rep = result.report
    assert [f.path for f in rep.images] == [str(path), "b.png", "c", "bad.jpg", "shown.png"]
    assert rep.images[3].error["code"] == "not_an_image" and rep.images[3].error["path"] == "bad.jpg"
    assert rep.images[4].error["code"] == "file_not_found" and rep.images[4].error["path"] == "shown.png"
    # the same cells as analysing the decoded arrays directly
    direct = analyzer.analyze_case([("c", img)], AnalysisOptions())
    assert [c.to_dict() for c in rep.images[2].cells] == [c.to_dict() for c in direct.images[0].cells]
    assert [p is None for p in result.overlays] == [False, False, False, True, True]
    assert result.overlays[0].shape[0] == img.shape[0]  # the legend widens it
    assert analyzer.run_case(inputs[:1]).overlays == []


@pytest.mark.parametrize("given, choice", [
    (None, "shipped"), ("", "shipped"), ("  Shipped ", "shipped"), ("NONE", "none"), ("Tiny", "tiny"),
    ("models/morphnet-v1", "models/morphnet-v1"),
])
def test_model_choice_maps_every_spelling_onto_one_vocabulary(given, choice) -> None:
    assert model_choice(given) == choice


def test_build_analyzer_from_choices() -> None:
    a = build_analyzer("none", "none")
    assert a.classifier is None and a.localizer is None
    assert a.model_info()["localizer"] == {"name": "hand-made seeds"}
    assert build_analyzer("tiny", "none").classifier is not None
    with pytest.raises(MorphError) as ei:
        load_localizer("tiny")
    assert ei.value.path == "localizer"
    with pytest.raises(MorphError):
        build_analyzer("/no/such/model", "none")
