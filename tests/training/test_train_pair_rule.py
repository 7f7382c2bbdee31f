"""Learning the pair rule (training/train_pair_rule.py): pairs are labelled from boxes, the
logistic fit, the pair network's training and the threshold choice behave, a run writes a
loadable localizer folder with one rule of the kind asked for, and the shipped rule joins real
cells cut in two while keeping real neighbours apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from morph.localize import PairNetJudge, load_localizer
from morph.segment import FieldPairs
from morph.segment.pairs import CROP_CHANNELS, CROP_SHAPE, PAIR_FEATURES, PairRule
from tests.training.test_train_localizer import _yolo
from training import train_pair_rule
from training.train_pair_rule import (
    ONE_CELL,
    TWO_CELLS,
    UNSURE,
    LabelledPairs,
    choose_threshold,
    collect,
    fit_logistic,
    fit_pair_net,
    join_counts,
    label_pairs,
    probabilities,
    with_shifted,
)

F = len(PAIR_FEATURES)


def _pairs(boxes_a: list[list[float]], boxes_b: list[list[float]]) -> FieldPairs:
    n = len(boxes_a)
    return FieldPairs(np.zeros((n, 2), dtype=np.int64), np.zeros((n, F)), None, np.array(boxes_a, float),
                      np.array(boxes_b, float))


def test_pairs_are_labelled_from_the_boxes() -> None:
    halves = _pairs([[0, 0, 10, 20], [40, 0, 60, 20]], [[10, 0, 20, 20], [60, 0, 80, 20]])
    one_box = np.array([[0, 0, 20, 20], [40, 0, 60, 20], [60, 0, 80, 20]], float)
    assert label_pairs(halves, one_box).tolist() == [ONE_CELL, TWO_CELLS]
    assert label_pairs(halves, np.zeros((0, 4))).tolist() == [UNSURE, UNSURE]  # no boxes: nothing known
    # a box that neither region nor the pair matches well (an unlabelled border cell's neighbour)
    assert label_pairs(_pairs([[0, 0, 10, 20]], [[10, 0, 20, 20]]), np.array([[0, 0, 50, 50]], float)).tolist() == [UNSURE]


def _separable(n: int = 400, seed: int = 0, with_crops: bool = False) -> LabelledPairs:
    """Pairs a rule can learn: one cell has a ridge between its peaks (a measure) and the
    same mark in its picture."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(np.int64)
    x = rng.normal(size=(n, F))
    x[:, PAIR_FEATURES.index("saddle")] += 3.0 * y
    crops = None
    if with_crops:
        crops = rng.random((n, len(CROP_CHANNELS), *CROP_SHAPE)).astype(np.float16)
        crops[y == 1, CROP_CHANNELS.index("centre_map"), 8:16, 12:20] += 2.0
    return LabelledPairs(x, crops, y)


def test_logistic_fit_and_threshold_choice() -> None:
    data = _separable()
    x, y = data.features, data.labels
    rule = fit_logistic(x, y)
    assert rule.coef[PAIR_FEATURES.index("saddle")] > 1.0
    p = rule.probability(x)
    assert p[y == 1].mean() > 0.7 > 0.3 > p[y == 0].mean()
    strict = choose_threshold(p, y, wrong_cost=50.0)
    loose = choose_threshold(p, y, wrong_cost=0.0)
    assert 0.5 <= loose <= strict <= 0.95
    assert join_counts(p, y, strict)["wrongly_joined"] <= join_counts(p, y, loose)["wrongly_joined"]


def test_a_pair_network_learns_to_tell_the_pairs_apart() -> None:
    data = _separable(n=600, with_crops=True)
    judge = fit_pair_net(data, "pairnet_tiny", epochs=40, seed=0)
    p = probabilities(judge, data)
    assert p[data.labels == 1].mean() > 0.8 > 0.2 > p[data.labels == 0].mean()
    again = fit_pair_net(data, "pairnet_tiny", epochs=40, seed=0)  # one seed, one network
    assert np.allclose(probabilities(again, data), p)
    # the gate passes almost every cut cell and spares the network the plain pairs of cells
    assert judge.gate is not None
    passed = judge.gate.probability(data.features) >= judge.gate.threshold
    assert passed[data.labels == 1].mean() >= 0.995 and passed[data.labels == 0].mean() < 0.5


@pytest.mark.parametrize(("judge", "written"), [("net", "pair_net.json"), ("logistic", "pair_rule.json")])
def test_a_run_writes_a_loadable_localizer_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, judge: str,
                                                  written: str) -> None:
    data = _yolo(tmp_path / "yolo")
    seen: list[tuple[int, bool]] = []

    def fake_collect(jobs, folder, workers, desc, progress, with_crops=False):  # locating fields is covered below
        seen.append((len(jobs), with_crops))
        assert all(shift in train_pair_rule.TRAIN_SHIFTS for _, _, shift in jobs if shift)
        return _separable(seed=len(seen), with_crops=with_crops)

    monkeypatch.setattr(train_pair_rule, "collect", fake_collect)
    out = tmp_path / "loc"
    args = ["--yolo", str(data), "--bcd", "none", "--judge", judge, "--arch", "pairnet_tiny", "--epochs", "2",
            "--no-progress"]
    assert train_pair_rule.main([*args, "--out", str(out), "--version", "9.1.0"]) == 0
    # the training split's fields, each also under one shift, then the validation split's as they are
    assert seen == [(4, judge == "net"), (1, judge == "net")]
    det = load_localizer(out)
    assert isinstance(det.pair_rule, PairNetJudge if judge == "net" else PairRule)
    assert 0.5 <= det.pair_rule.threshold <= 0.95
    assert det.name == "loc" and det.version == "9.1.0"
    assert (out / "weights.pt").is_file()  # the source folder's network, copied
    (out / "MODEL_CARD.md").write_text("this folder's own card")
    other = "logistic" if judge == "net" else "net"
    assert train_pair_rule.main([*args, "--out", str(out), "--judge", other]) == 0
    assert (out / "MODEL_CARD.md").read_text() == "this folder's own card"  # a rerun leaves it alone
    assert not (out / written).exists()  # one rule per folder: the new kind replaced the old
    assert train_pair_rule.main([*args, "--out", str(out)]) == 0
    provenance = json.loads((out / written).read_text())["provenance"]
    assert provenance["pairs"]["val"]["split_cells"] > 0 and provenance["judge"] == judge


def test_training_fields_come_as_they_are_and_under_distinct_shifts() -> None:
    boxes = np.zeros((0, 4))
    jobs = with_shifted([("a.jpg", boxes), ("b.jpg", boxes)], 3, seed=1)
    assert [p for p, _, s in jobs if not s] == ["a.jpg", "b.jpg"]
    for name in ("a.jpg", "b.jpg"):
        shifted = [s for p, _, s in jobs if p == name and s]
        assert len(shifted) == len(set(shifted)) == 3 and set(shifted) <= set(train_pair_rule.TRAIN_SHIFTS)
    assert with_shifted([("a.jpg", boxes)], 3, seed=1) == jobs[:4]  # one seed, one draw
    image = np.full((40, 40, 3), 200, np.uint8)
    image[10:30, 10:30] = (180, 90, 120)
    for name, shift in train_pair_rule.TRAIN_SHIFTS.items():  # each keeps the field's geometry
        assert shift(image).shape == image.shape, name


def test_a_run_without_both_kinds_of_pair_stops_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_pair_rule, "collect",
                        lambda *a: LabelledPairs(np.zeros((3, F)), None, np.zeros(3, np.int64)))
    with pytest.raises(SystemExit, match="both kinds"):
        train_pair_rule.main(["--yolo", str(_yolo(tmp_path / "yolo")), "--bcd", "none", "--judge", "logistic",
                              "--out", str(tmp_path / "o")])


@pytest.mark.data
def test_the_shipped_rule_on_real_fields(txl_dir: Path) -> None:
    """On 40 TXL-PBC validation fields (never used to fit the rule; its threshold was chosen on
    that split): most cells cut in two are joined, almost no pair of cells is."""
    from training.train_localizer import yolo_boxes_by_image

    fields = list(yolo_boxes_by_image(txl_dir, "val", {"1": "rbc"}, ("rbc",)).items())[:40]
    rule = load_localizer().pair_rule
    assert rule is not None
    data = collect(with_shifted([(p, b["rbc"]) for p, b in fields], 0), str(load_localizer().folder), 1, "", False,
                   rule.reads_crops)
    got = join_counts(probabilities(rule, data), data.labels, rule.threshold)
    assert got["split_cells"] >= 15 and got["cell_pairs"] >= 100
    assert got["joined"] >= 0.4 * got["split_cells"]
    assert got["wrongly_joined"] <= 0.01 * got["cell_pairs"]
