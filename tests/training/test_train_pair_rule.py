"""Learning the pair rule (training/train_pair_rule.py): pairs are labelled from boxes, the
logistic fit and the threshold choice behave, a run writes a loadable localizer folder, and
the shipped rule joins real cells cut in two while keeping real neighbours apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from morph.localize import load_localizer
from morph.segment import CellPairs
from morph.segment.pairs import PAIR_FEATURES
from tests.training.test_train_localizer import _yolo
from training import train_pair_rule
from training.train_pair_rule import (
    ONE_CELL,
    TWO_CELLS,
    UNSURE,
    choose_threshold,
    collect,
    fit_logistic,
    join_counts,
    label_pairs,
)

F = len(PAIR_FEATURES)


def _pairs(boxes_a: list[list[float]], boxes_b: list[list[float]]) -> CellPairs:
    return CellPairs(np.zeros((len(boxes_a), F)), np.array(boxes_a, float), np.array(boxes_b, float))


def test_pairs_are_labelled_from_the_boxes() -> None:
    halves = _pairs([[0, 0, 10, 20], [40, 0, 60, 20]], [[10, 0, 20, 20], [60, 0, 80, 20]])
    one_box = np.array([[0, 0, 20, 20], [40, 0, 60, 20], [60, 0, 80, 20]], float)
    assert label_pairs(halves, one_box).tolist() == [ONE_CELL, TWO_CELLS]
    assert label_pairs(halves, np.zeros((0, 4))).tolist() == [UNSURE, UNSURE]  # no boxes: nothing known
    # a box that neither region nor the pair matches well (an unlabelled border cell's neighbour)
    assert label_pairs(_pairs([[0, 0, 10, 20]], [[10, 0, 20, 20]]), np.array([[0, 0, 50, 50]], float)).tolist() == [UNSURE]


def _separable(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(np.int64)
    x = rng.normal(size=(n, F))
    x[:, PAIR_FEATURES.index("saddle")] += 3.0 * y  # one cell: a ridge between the peaks
    return x, y


def test_logistic_fit_and_threshold_choice() -> None:
    x, y = _separable()
    rule = fit_logistic(x, y)
    assert rule.coef[PAIR_FEATURES.index("saddle")] > 1.0
    p = rule.probability(x)
    assert p[y == 1].mean() > 0.7 > 0.3 > p[y == 0].mean()
    strict = choose_threshold(rule, x, y, wrong_cost=50.0)
    loose = choose_threshold(rule, x, y, wrong_cost=0.0)
    assert 0.5 <= loose <= strict <= 0.95
    assert join_counts(rule, x, y, strict)["wrongly_joined"] <= join_counts(rule, x, y, loose)["wrongly_joined"]


def test_a_run_writes_a_loadable_localizer_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _yolo(tmp_path / "yolo")
    seen: list[int] = []

    def fake_collect(jobs, folder, workers, desc, progress):  # locating fields is covered below
        seen.append(len(jobs))
        return _separable(seed=len(seen))

    monkeypatch.setattr(train_pair_rule, "collect", fake_collect)
    out = tmp_path / "loc"
    assert train_pair_rule.main(["--yolo", str(data), "--bcd", "none", "--out", str(out), "--version", "9.1.0",
                                 "--no-progress"]) == 0
    assert seen == [2, 1]  # the training split's fields, then the validation split's
    det = load_localizer(out)
    assert det.pair_rule is not None and 0.5 <= det.pair_rule.threshold <= 0.95
    assert det.name == "loc" and det.version == "9.1.0"
    assert (out / "weights.pt").is_file()  # the source folder's network, copied
    (out / "MODEL_CARD.md").write_text("this folder's own card")
    assert train_pair_rule.main(["--yolo", str(data), "--bcd", "none", "--out", str(out), "--no-progress"]) == 0
    assert (out / "MODEL_CARD.md").read_text() == "this folder's own card"  # a rerun leaves it alone
    written = json.loads((out / "pair_rule.json").read_text())
    assert written["provenance"]["pairs"]["val"]["split_cells"] > 0


def test_a_run_without_both_kinds_of_pair_stops_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_pair_rule, "collect", lambda *a: (np.zeros((3, F)), np.zeros(3, np.int64)))
    with pytest.raises(SystemExit, match="both kinds"):
        train_pair_rule.main(["--yolo", str(_yolo(tmp_path / "yolo")), "--bcd", "none", "--out", str(tmp_path / "o")])


@pytest.mark.data
def test_the_shipped_rule_on_real_fields(txl_dir: Path) -> None:
    """On 40 TXL-PBC validation fields (never used to fit the rule; its threshold was chosen on
    that split): most cells cut in two are joined, almost no pair of cells is."""
    from training.train_localizer import _boxes_by_image

    fields = list(_boxes_by_image(txl_dir, "val", {"1": "rbc"}, ("rbc",)).items())[:40]
    x, y = collect([(p, b["rbc"]) for p, b in fields], str(load_localizer().folder), 1, "", False)
    got = join_counts(load_localizer().pair_rule, x, y, load_localizer().pair_rule.threshold)
    assert got["split_cells"] >= 15 and got["cell_pairs"] >= 100
    assert got["joined"] >= 0.4 * got["split_cells"]
    assert got["wrongly_joined"] <= 0.01 * got["cell_pairs"]
