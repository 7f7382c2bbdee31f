"""Training fits the OOD thresholds on the real validation crops (``finalize``): at most the
configured share rejected, none when switched off; old configs keep parsing."""

from __future__ import annotations

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
