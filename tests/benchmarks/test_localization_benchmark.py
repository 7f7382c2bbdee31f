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


def test_bcd_set_scores_the_part_asked_for(monkeypatch, bcd_dir) -> None:
    """``--bcd-part train`` scores bcd-256's training part, never its held-out fields: the two
    parts together are every field with red-cell boxes."""
    monkeypatch.setattr(bench, "LOCALIZER", None)
    test, train = bench.bench_bcd(bcd_dir, 2, None), bench.bench_bcd(bcd_dir, 2, None, "train")
    assert (test["set"], train["set"]) == ("bcd-test", "bcd-train")
    assert test["fields"] == train["fields"] == 2 and test["gt"] != train["gt"]
    fields = bench.read_bcd256_boxes(bcd_dir)[0]
    held_out = sum(bench.bcd256_is_test(f.number) for f in fields)
    assert bench.bench_bcd(bcd_dir, None, None, "train")["fields"] == len(fields) - held_out
