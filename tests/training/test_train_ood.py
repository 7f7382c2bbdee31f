"""Training fits the OOD thresholds on the real validation crops (``finalize``): at most the
configured share rejected, none when switched off; old configs keep parsing."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from morph.classify import build_untrained
from morph.data import CropSet
from training.train import TrainConfig, _fit_ood


def _val(n: int) -> CropSet:
    kinds = ["rbc"] * n
    return CropSet(np.zeros((n, 8, 8, 3), np.uint8), ["normal"] * n, ["img"] * n, kinds, ["wright"] * n, ["chula"] * n)


def test_finalize_fits_ood_within_the_configured_share() -> None:
    clf = build_untrained()
    logits = np.random.default_rng(0).normal(size=(400, len(clf.labels))).astype(np.float32) * 2
    keep = np.ones(400, bool)
    keep[:100] = False  # validation crops of classes the model lacks are not used
    out = _fit_ood(clf, TrainConfig(ood_max_reject=0.05), logits, _val(400), keep)
    assert out is not None and out["rejected_on_validation"] <= 0.05
    entry = clf.thresholds["ood"]
    assert entry["max_reject"] == 0.05 and "chula" in entry["fitted_on"]["rbc/wright"] and "n=300" in entry["fitted_on"]["rbc/wright"]
    assert clf.decode(logits[keep], "rbc").out_of_distribution.mean() <= 0.05


def test_ood_off_and_old_configs() -> None:
    clf = build_untrained()
    logits = np.zeros((200, len(clf.labels)), np.float32)
    assert _fit_ood(clf, TrainConfig(ood_max_reject=0.0), logits, _val(200), np.ones(200, bool)) is None
    assert "ood" not in clf.thresholds
    assert TrainConfig.from_dict({"name": "old"}).ood_max_reject == 0.02


def _nmb_val(n_retic: int, n_normal: int) -> CropSet:
    labels = ["reticulocyte"] * n_retic + ["normal"] * n_normal
    n = len(labels)
    return CropSet(np.zeros((n, 8, 8, 3), np.uint8), labels, ["img"] * n, ["rbc"] * n, ["nmb"] * n,
                   ["synthetic-nmb"] * n)


def test_reticulocyte_threshold_keeps_the_true_calls_and_drops_the_unsure_false_ones() -> None:
    """Confident reticulocytes stay; a normal cell called a reticulocyte at 0.6 becomes
    'unidentified' (one such call makes an aplastic crisis read "reticulocytes present")."""
    from training.train import RETICULOCYTE_KEEP, fit_reticulocyte_threshold

    clf = build_untrained()
    r, nm = clf.labels.index("reticulocyte"), clf.labels.index("normal")
    logits = np.full((140, len(clf.labels)), -20.0, np.float32)
    logits[:100, r] = np.linspace(4.0, 8.0, 100)  # true reticulocytes: confident
    logits[100:130, nm] = 5.0  # normal cells read as normal
    logits[130:, r], logits[130:, nm] = 0.4, 0.0  # normal cells read as reticulocytes, unsure (~0.6)
    fitted = fit_reticulocyte_threshold(clf, logits, _nmb_val(100, 40))
    assert fitted is not None and fitted["recall_kept"] >= RETICULOCYTE_KEEP
    assert fitted["false_calls_before"] == 10 and fitted["false_calls_after"] == 0
    clf.thresholds = {"global": 0.0, "per_class": {"reticulocyte": fitted["threshold"]}}
    labels = clf.decode(logits, "rbc", "nmb").labels
    assert labels[:100].count("reticulocyte") >= 99 and set(labels[130:]) == {"unidentified"}
    # too few rendered reticulocytes to fit a threshold: none
    assert fit_reticulocyte_threshold(clf, logits[90:], _nmb_val(10, 40)) is None


def test_finalize_keeps_the_ood_entry_beside_the_reticulocyte_threshold(tmp_path, monkeypatch) -> None:
    """Storing the reticulocyte threshold replaced the thresholds fitted before it, OOD entry
    included: morphnet-v5 shipped without its OOD test."""
    import training.train as tt
    from morph.classify import Preprocessing, load_model

    monkeypatch.setattr(tt, "fit_reticulocyte_threshold", lambda *a: {"threshold": 0.8})
    clf = build_untrained()
    rng = np.random.default_rng(0)
    val = replace(_val(200), crops=rng.integers(0, 255, (200, 48, 48, 3), dtype=np.uint8))
    synth = replace(_nmb_val(60, 20), crops=rng.integers(0, 255, (80, 48, 48, 3), dtype=np.uint8))
    ds = tt.Datasets(train=val, val=val, synth_val=synth, split={"unit": "image"}, skipped=[], provenance={})
    cfg = TrainConfig(name="tiny", arch="morphnet_tiny", ood_max_reject=0.05)
    tt.finalize(clf.net, cfg, Preprocessing(crop_size=48), clf.labels, ds, tmp_path, 1.0)
    saved = load_model(tmp_path).thresholds
    assert saved["per_class"]["reticulocyte"] == 0.8 and "rbc/wright" in saved["ood"]["per_group"]
