"""benchmarks/localization.py's ring-cell set on two rendered fields (one dense, one sparse)."""

from __future__ import annotations

import pytest

from benchmarks import localization as bench


def test_ring_set_scores_red_and_nucleated_cells(monkeypatch) -> None:
    monkeypatch.setattr(bench, "LOCALIZER", None)  # hand-made seeds: no model needed
    r = bench.bench_ring(2, None)
    assert r["set"] == "ring" and r["fields"] == 2 and r["gt"] > 0
    assert 0.8 <= r["precision"] <= 1.0 and 0.8 <= r["recall"] <= 1.0
    # field 1 is sparse (5-40 cells): its red cells are scored on their own too
    assert 0.8 <= r["sparse_recall"] <= 1.0
    assert 0.0 <= r["nucleated_precision"] <= 1.0
    false = r["nucleated_dets"] - r["nucleated_precision"] * r["nucleated_dets"]
    assert r["false_nucleated_per_field"] == pytest.approx(false / 2)
