"""CellClassifier: crops at physical scale, kind-aware decoding, thresholds, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from morph.classify import (
    MODEL_LABELS,
    CellClassifier,
    Preprocessing,
    build_untrained,
    extract_crops,
    load_model,
)
from morph.errors import MorphError
from morph.labels import MARROW_LABELS, NUCLEATED_LABELS, RBC_LABELS, UNIDENTIFIED
from morph.types import Cell


def _field() -> tuple[np.ndarray, list[Cell]]:
    rng = np.random.default_rng(0)
    img = np.full((160, 220, 3), 225, np.uint8)
    yy, xx = np.mgrid[:160, :220]
    cells = []
    for i, (x, y, kind) in enumerate([(50, 60, "rbc"), (120, 80, "nucleated"), (200, 150, "rbc"), (10, 10, "platelet")]):
        disk = (xx - x) ** 2 + (yy - y) ** 2 < 20**2
        img[disk] = (200, 110, 120) if kind == "rbc" else (90, 60, 150)
        cells.append(Cell(id=i, x=x, y=y, bbox=(x - 20, y - 20, x + 20, y + 20), kind=kind,
                          area_px=1256.0, diameter_px=40.0, eccentricity=0.1,
                          label="platelet" if kind == "platelet" else "unclassified"))
    img = np.clip(img.astype(int) + rng.integers(-5, 5, img.shape), 0, 255).astype(np.uint8)
    return img, cells


def test_classify_cells_kind_aware() -> None:
    clf = build_untrained("morphnet_tiny", seed=1)
    img, cells = _field()
    clf.classify_cells(img, cells, um_per_px=0.1, stain="wright")
    rbc = [c for c in cells if c.kind == "rbc"]
    nuc = [c for c in cells if c.kind == "nucleated"]
    assert all(c.label in RBC_LABELS for c in rbc)
    assert all(c.label in NUCLEATED_LABELS + MARROW_LABELS for c in nuc)
    assert cells[3].label == "platelet"  # platelets untouched
    for c in rbc + nuc:
        assert 0 < c.confidence <= 1
        assert len(c.top_labels) == 3
        assert abs(c.top_labels[0][1] - c.confidence) < 1e-9


def test_nmb_stain_restricts_red_cells() -> None:
    clf = build_untrained("morphnet_tiny", seed=2)
    img, cells = _field()
    clf.classify_cells(img, cells, um_per_px=0.1, stain="nmb")
    for c in cells:
        if c.kind == "rbc":
            assert c.label in ("normal", "reticulocyte")
            assert {lab for lab, _ in c.top_labels} <= {"normal", "reticulocyte"}


def test_a_label_the_stain_cannot_show_is_never_given() -> None:
    """Reticulocytes are seen on new methylene blue only: on Wright (or any other stated stain)
    the logit is masked, even when the network votes for it with everything it has."""
    from morph.labels import visible_on

    assert visible_on("reticulocyte", "nmb") and not visible_on("reticulocyte", "wright")
    assert visible_on("teardrop", "wright") and visible_on("teardrop", "nmb")
    clf = build_untrained("morphnet_tiny", seed=2)
    logits = np.zeros((3, len(clf.labels)), np.float32)
    logits[:, clf.labels.index("reticulocyte")] = 50.0
    wright = clf.decode(logits, "rbc", "wright")
    assert "reticulocyte" not in wright.raw_labels
    assert np.all(wright.probs[:, clf.labels.index("reticulocyte")] == 0)
    assert clf.decode(logits, "rbc", "nmb").raw_labels == ["reticulocyte"] * 3
    img, cells = _field()
    clf.classify_cells(img, cells, um_per_px=0.1, stain="wright")
    assert all(c.label != "reticulocyte" and "reticulocyte" not in dict(c.top_labels) for c in cells)


def test_threshold_gives_unidentified() -> None:
    clf = build_untrained("morphnet_tiny")
    clf.thresholds = {"global": 0.999, "per_class": {}}
    crops = np.random.default_rng(0).integers(0, 255, (4, 48, 48, 3), dtype=np.uint8)
    pred = clf.predict_crops(crops)
    assert pred.labels == [UNIDENTIFIED] * 4
    assert all(lab in RBC_LABELS for lab in pred.raw_labels)
    assert np.allclose(pred.probs.sum(1), 1.0)


def test_crops_keep_physical_scale() -> None:
    pre = Preprocessing(crop_size=32, um_per_px=0.4)  # crop covers 12.8 um
    img = np.zeros((300, 300, 3), np.uint8)
    img[100:200, 100:200] = 255
    # at 0.2 um/px the window is 64 px; at 0.1 um/px it is 128 px: the same square looks smaller
    a = extract_crops(img, [(150, 150)], 0.2, pre)
    b = extract_crops(img, [(150, 150)], 0.1, pre)
    assert a.shape == b.shape == (1, 32, 32, 3)
    assert a.mean() > b.mean()
    # a centre at the corner is padded, not an error
    c = extract_crops(img, [(0, 0), (299, 299)], 0.2, pre)
    assert c.shape == (2, 32, 32, 3)


def _rendered_field() -> tuple[np.ndarray, list[tuple[float, float]], float]:
    from morph.synth import render_field

    f = render_field(3, field_type="blood")
    return f.image, [((c.bbox[0] + c.bbox[2]) / 2, (c.bbox[1] + c.bbox[3]) / 2) for c in f.cells[:12]], f.um_per_px


def test_glass_balanced_crops_cancel_a_camera_white_balance_and_exposure() -> None:
    from morph import shifts

    image, centres, um = _rendered_field()
    balanced, plain = Preprocessing(crop_size=32, glass_level=200), Preprocessing(crop_size=32)
    for other in (shifts.white_balance(image, (1.08, 1.0, 0.9)), shifts.adjust_brightness_gamma(image, brightness=0.8)):
        before = np.abs(extract_crops(image, centres, um, plain).astype(int) - extract_crops(other, centres, um, plain))
        after = np.abs(extract_crops(image, centres, um, balanced).astype(int) - extract_crops(other, centres, um, balanced))
        assert before.mean() > 8 and after.mean() < 2.5
    # the glass around the cells now reads 200 in every channel
    from morph.segment import field_glass

    crops = extract_crops(image, centres, um, balanced)
    assert np.allclose(field_glass(crops.reshape(-1, crops.shape[2], 3)), 200, atol=3)


def test_a_white_label_box_does_not_pass_for_the_glass() -> None:
    from morph import shifts
    from morph.segment import field_glass

    image, _, _ = _rendered_field()
    boxed = shifts.fill_region(image, shifts.corner_box(image.shape, 0.10), (252, 252, 252))
    assert np.allclose(field_glass(boxed), field_glass(image), atol=3)


def test_glass_level_travels_with_the_model_and_is_checked(tmp_path: Path) -> None:
    clf = build_untrained("morphnet_tiny", seed=3)
    clf.preprocessing = Preprocessing(crop_size=clf.preprocessing.crop_size, glass_level=200)
    clf.save(tmp_path / "m")
    assert load_model(tmp_path / "m").preprocessing.glass_level == 200
    assert Preprocessing.from_dict({"crop_size": 48, "um_per_px": 0.3}).glass_level == 0  # older folders: off
    with pytest.raises(MorphError, match="glass_level"):
        Preprocessing(glass_level=300)


def test_save_load_round_trip(tmp_path: Path) -> None:
    clf = build_untrained("morphnet_tiny", seed=3)
    clf.temperature = 1.7
    clf.thresholds = {"global": 0.2, "per_class": {"teardrop": 0.3}}
    clf.metrics = {"accuracy": 0.5, "macro_f1": 0.4, "ece": 0.1, "per_class": {}}
    clf.save(tmp_path / "m")
    for f in ("config.json", "labels.json", "preprocessing.json", "thresholds.json", "weights.pt", "metrics.json"):
        assert (tmp_path / "m" / f).is_file()
    back = load_model(tmp_path / "m")
    crops = np.random.default_rng(1).integers(0, 255, (6, 48, 48, 3), dtype=np.uint8)
    assert np.array_equal(clf.logits(crops), back.logits(crops))
    p1, p2 = clf.predict_crops(crops), back.predict_crops(crops)
    assert p1.labels == p2.labels
    assert np.allclose(p1.probs, p2.probs)
    assert back.temperature == 1.7 and back.threshold_for("teardrop") == 0.3
    assert back.info()["metrics"]["macro_f1"] == 0.4
    assert back.labels == list(MODEL_LABELS)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(MorphError) as ei:
        load_model(tmp_path / "nope")
    assert ei.value.code == "model_not_found"
    (tmp_path / "broken").mkdir()
    with pytest.raises(MorphError) as ei:
        load_model(tmp_path / "broken")
    assert ei.value.code == "bad_model"
    clf = build_untrained("morphnet_tiny")
    clf.save(tmp_path / "m")
    (tmp_path / "m" / "weights.pt").write_bytes(b"garbage")
    with pytest.raises(MorphError) as ei:
        load_model(tmp_path / "m")
    assert ei.value.code == "bad_model"


def test_unknown_label_rejected() -> None:
    clf = build_untrained("morphnet_tiny")
    with pytest.raises(MorphError):
        CellClassifier(clf.net, ["not_a_label"], arch="morphnet_tiny")


# -- the shipped model ------------------------------------------------------------------------
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "morphnet-v6"


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="shipped model folder not present")
def test_shipped_model_folder_is_complete_and_small() -> None:
    files = {p.name for p in SHIPPED.iterdir()}
    assert {"config.json", "labels.json", "preprocessing.json", "thresholds.json", "weights.pt",
            "metrics.json", "confusion_matrix.png", "MODEL_CARD.md", "split.json"} <= files
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 10 * 1024 * 1024
    import json

    m = json.loads((SHIPPED / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "per_class", "ece"} <= set(m)
    clf = load_model()  # the default is the shipped model
    assert clf.name == "morphnet-v6"
    assert "rbc/wright" in clf.thresholds["ood"]["per_group"]  # debris and platelets go to unidentified
    info = clf.info()
    assert info["provenance"]["reticulocyte"].startswith("SYNTHETIC")
    assert info["provenance"]["teardrop"].startswith("real")


@pytest.mark.skipif(not SHIPPED.is_dir(), reason="shipped model folder not present")
def test_shipped_model_on_a_few_chula_validation_fields(chula_dir: Path) -> None:
    import json

    from morph.data import crops_from_points
    from morph.readers import read_chula_points
    from morph.segment import DEFAULT_UM_PER_PX

    clf = load_model()
    val = {g.split(":", 1)[-1] for g in json.loads((SHIPPED / "split.json").read_text())["val_images"]}
    pts = [p for p in read_chula_points(chula_dir).points if Path(p.image_path).stem in sorted(val)[:8]]
    cs = crops_from_points(pts, clf.preprocessing, DEFAULT_UM_PER_PX)
    pred = clf.predict_crops(cs.crops, cs.kinds, "wright")
    acc = float(np.mean(np.array(pred.raw_labels) == np.array(cs.labels)))
    assert len(cs) > 100 and acc > 0.7


# -- test-time augmentation -------------------------------------------------------------------
def test_flips_tta_averages_the_mirror_image(tmp_path: Path) -> None:
    clf = build_untrained("morphnet_tiny", seed=4)
    crops = np.random.default_rng(2).integers(0, 255, (5, 48, 48, 3), dtype=np.uint8)
    plain, mirrored = clf.logits(crops), clf.logits(crops[:, :, ::-1].copy())
    clf.preprocessing = Preprocessing(tta="flips").resolved()
    both = clf.logits(crops)
    assert np.allclose(both, (plain + mirrored) / 2, atol=1e-5)
    assert np.allclose(clf.logits(crops[:, :, ::-1].copy()), both, atol=1e-5)  # mirror-invariant
    clf.save(tmp_path / "m")
    assert load_model(tmp_path / "m").preprocessing.tta == "flips"


def test_unknown_tta_names_the_file(tmp_path: Path) -> None:
    import json

    build_untrained("morphnet_tiny").save(tmp_path / "m")
    pre = json.loads((tmp_path / "m" / "preprocessing.json").read_text())
    pre["tta"] = "rot17"
    (tmp_path / "m" / "preprocessing.json").write_text(json.dumps(pre))
    with pytest.raises(MorphError) as ei:
        load_model(tmp_path / "m")
    assert ei.value.code == "bad_model" and "rot17" in ei.value.message
    assert (ei.value.path or "").endswith("preprocessing.json")
