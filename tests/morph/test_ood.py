"""Out-of-distribution path: the energy score over the allowed logits, the fitted thresholds,
cells over them going to ``unidentified``, folders without them behaving as before, and the
rendered objects of the OOD benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from morph.classify import build_untrained, load_model
from morph.errors import MorphError
from morph.evaluation import OOD_FIELD_OBJECTS, auroc, ood_object_crops, ood_rejection
from morph.labels import UNIDENTIFIED
from morph.ood import energy_scores, fit_ood_thresholds, ood_threshold
from morph.synth import OOD_OBJECTS, render_ood_crop


def _logits(n: int, c: int, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, c)) * scale).astype(np.float32)


def test_energy_is_minus_t_logsumexp_over_the_allowed_logits_only() -> None:
    z = np.array([[1.0, 2.0, 50.0], [0.0, -1.0, 3.0]])
    allowed = np.array([[True, True, False], [True, True, True]])
    e = energy_scores(z, allowed, temperature=2.0)
    assert e[0] == pytest.approx(-2.0 * np.log(np.exp(0.5) + np.exp(1.0)))
    assert e[1] == pytest.approx(-2.0 * np.log(np.exp(0.0) + np.exp(-0.5) + np.exp(1.5)))
    z2 = z.copy()
    z2[0, 2] = -50.0  # a masked logit does not move the score
    assert energy_scores(z2, allowed, 2.0)[0] == pytest.approx(e[0])
    assert energy_scores(np.zeros((0, 3)), np.zeros((0, 3), bool)).shape == (0,)


def test_classifier_scores_a_cell_over_its_kind_labels() -> None:
    clf = build_untrained()
    z = _logits(4, len(clf.labels))
    base = clf.decode(z, "rbc").ood_scores
    z[:, clf.labels.index("neutrophil")] += 100.0  # a nucleated label: masked for red cells
    assert np.allclose(clf.decode(z, "rbc").ood_scores, base)
    assert not np.allclose(clf.decode(z, "nucleated").ood_scores, clf.decode(_logits(4, len(clf.labels)), "nucleated").ood_scores)


def test_over_threshold_cell_becomes_unidentified_and_keeps_its_raw_label() -> None:
    clf = build_untrained()
    z = _logits(40, len(clf.labels), seed=1)
    before = clf.decode(z, "rbc")
    assert not before.out_of_distribution.any()
    cut = float(np.median(before.ood_scores))
    clf.thresholds = {"global": 0.0, "per_class": {}, "ood": {"score": "energy", "per_group": {"rbc/wright": cut}}}
    pred = clf.decode(z, "rbc")
    over = pred.ood_scores > cut
    assert over.any() and (~over).any()
    assert np.array_equal(pred.out_of_distribution, over)
    assert all((lab == UNIDENTIFIED) == o for lab, o in zip(pred.labels, over, strict=True))
    assert pred.raw_labels == before.raw_labels
    # a group without a fitted threshold is not tested (nucleated cells, NMB stain)
    assert not clf.decode(z, "nucleated").out_of_distribution.any()
    assert not clf.decode(z, "rbc", "nmb").out_of_distribution.any()


def test_fit_respects_the_rejection_share() -> None:
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.normal(0, 1, 1000), rng.normal(5, 1, 200), np.full(60, 2.0)])
    groups = ["rbc/wright"] * 1000 + ["nucleated/wright"] * 200 + ["rbc/nmb"] * 60
    for share in (0.01, 0.02, 0.1):
        t = fit_ood_thresholds(scores, groups, share)
        assert set(t) == {"rbc/wright", "nucleated/wright", "rbc/nmb"}
        for g in t:
            sel = scores[np.array(groups) == g]
            assert (sel > t[g]).mean() <= share
            # not much looser than needed (ties aside: the constant group rejects none)
            assert (sel > t[g]).mean() >= share - 2 / len(sel) or g == "rbc/nmb"
    assert fit_ood_thresholds(scores[:49], groups[:49], 0.02) == {}  # too few cells to fit
    with pytest.raises(ValueError):
        fit_ood_thresholds(scores, groups, 0.0)
    assert ood_threshold(None, "rbc", "wright") is None


def test_classifier_fit_ood_stores_the_entry_and_rejects_at_most_the_share() -> None:
    clf = build_untrained()
    z = _logits(500, len(clf.labels), seed=4)
    entry = clf.fit_ood(z, "rbc", "wright", 0.02, "test logits")
    assert entry is not None and clf.thresholds["ood"] is entry
    assert set(entry["per_group"]) == {"rbc/wright"} and "n=500" in entry["fitted_on"]["rbc/wright"]
    assert clf.decode(z, "rbc").out_of_distribution.mean() <= 0.02
    assert build_untrained().fit_ood(z[:10], "rbc", "wright", 0.02, "x") is None


def test_folder_without_the_key_behaves_as_before_and_with_it_round_trips(tmp_path: Path) -> None:
    clf = build_untrained()
    clf.thresholds = {"global": 0.3, "per_class": {}}
    z = _logits(200, len(clf.labels), seed=5)
    old = load_model(clf.save(tmp_path / "old"))
    assert "ood" not in json.loads((tmp_path / "old" / "thresholds.json").read_text())
    pred = old.decode(z, "rbc")
    assert not pred.out_of_distribution.any()
    assert pred.labels == [r if c >= 0.3 else UNIDENTIFIED for r, c in zip(pred.raw_labels, pred.confidences, strict=True)]
    clf.fit_ood(z, "rbc", "wright", 0.05, "test")
    new = load_model(clf.save(tmp_path / "new"))
    assert new.thresholds["ood"] == clf.thresholds["ood"]
    assert new.decode(z, "rbc").labels == clf.decode(z, "rbc").labels


def test_shipped_model_has_no_ood_entry_yet_or_a_valid_one() -> None:
    ood = load_model().thresholds.get("ood")
    if ood is not None:
        assert ood["score"] == "energy" and ood["per_group"]


def test_ood_objects_render_deterministically() -> None:
    for obj in OOD_OBJECTS:
        a = render_ood_crop(7, obj, size=64)
        assert a.shape == (64, 64, 3) and a.dtype == np.uint8
        assert np.array_equal(a, render_ood_crop(7, obj, size=64))
        assert not np.array_equal(a, render_ood_crop(8, obj, size=64))
    with pytest.raises(MorphError):
        render_ood_crop(0, "neutrophil")


def test_object_crops_and_rejection_shares() -> None:
    clf = build_untrained()
    crops = ood_object_crops(clf.preprocessing, "stain_precipitate", 3)
    assert crops.shape == (3, clf.preprocessing.crop_size, clf.preprocessing.crop_size, 3)
    for obj in OOD_FIELD_OBJECTS:
        assert ood_object_crops(clf.preprocessing, obj, 2).shape[1:] == crops.shape[1:]
    ref = _logits(300, len(clf.labels), seed=6)
    clf.fit_ood(ref, "rbc", "wright", 0.02, "test")
    far = ref[:50] - 20.0  # every logit low: nothing matches
    row = ood_rejection(clf, far, reference=ref)
    assert row["n"] == 50 and row["ood"] == 1.0 and row["unidentified"] == 1.0
    assert row["auroc_energy"] == 1.0
    assert ood_rejection(clf, ref)["ood"] <= 0.02


def test_auroc() -> None:
    assert auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5
    assert auroc(np.array([]), np.array([1.0])) is None
