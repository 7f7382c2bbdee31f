"""Cells cut in two (morph.segment.pairs): the pair measures and pictures tell one cell cut
along a line from two touching cells, the rules join the first and not the second, a region
joins once, and the rule (a logistic rule or a pair network) lives in the localizer folder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from morph.errors import MorphError
from morph.localize import PairNetJudge, build_untrained_localizer, load_localizer, mirrored_pairs
from morph.models import create_model
from morph.segment import segment_field
from morph.segment.pairs import (
    CROP_CHANNELS,
    CROP_SHAPE,
    PAIR_FEATURES,
    PairRule,
    pair_crops,
    pair_features,
    pairs_to_join,
)
from morph.segment.regions import region_stats
from morph.synth import render_field

R = 11.0  # the typical red-cell radius the localizer measures (working px)
#: a cell's own radius: the measure (distance to the glass, weighted) reads a little under it
CELL = 1.12 * R


def _gauss(yy: np.ndarray, xx: np.ndarray, y: float, x: float, sy: float, sx: float) -> np.ndarray:
    return np.exp(-((yy - y) ** 2) / (2 * sy * sy) - ((xx - x) ** 2) / (2 * sx * sx))


def _cut_cell() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, tuple[float, float]]]:
    """One round cell with a pale centre, cut in two through the centre by two peaks of the map
    on its halves (a ridge between them)."""
    yy, xx = np.mgrid[:40, :60].astype(float)
    disc = (yy - 20) ** 2 + (xx - 30) ** 2 <= CELL * CELL
    labels = np.where(disc, np.where(xx < 30, 1, 2), 0).astype(np.int32)
    stain = np.where(disc, 1.0 - 0.6 * _gauss(yy, xx, 20, 30, 4, 4), 0.0)  # the pale centre
    # weak peaks: where the map is sure of two centres the rule trusts it
    heat = 0.3 * np.maximum(_gauss(yy, xx, 20, 25, 3, 3), _gauss(yy, xx, 20, 35, 3, 3)) + 0.15 * _gauss(yy, xx, 20, 30, 2, 6)
    return labels, heat, stain, {1: (20.0, 25.0), 2: (20.0, 35.0)}


def _two_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, tuple[float, float]]]:
    """Two round cells touching along a short border, a peak on each and a valley between."""
    yy, xx = np.mgrid[:40, :80].astype(float)
    a = (yy - 20) ** 2 + (xx - 27) ** 2 <= CELL * CELL
    b = (yy - 20) ** 2 + (xx - 49) ** 2 <= CELL * CELL
    labels = np.zeros(yy.shape, np.int32)
    labels[a] = 1
    labels[b & ~a] = 2
    stain = np.where(labels > 0, 1.0, 0.0)
    heat = 0.8 * np.maximum(_gauss(yy, xx, 20, 27, 3, 3), _gauss(yy, xx, 20, 49, 3, 3))
    return labels, heat, stain, {1: (20.0, 27.0), 2: (20.0, 49.0)}


def _features(case) -> dict[str, float]:
    labels, heat, stain, centres = case
    at = np.zeros((3, 2))
    for i, c in centres.items():
        at[i] = c
    pairs, x = pair_features(labels, region_stats(labels, 2), np.array([False, True, True]), heat, stain, at,
                             np.zeros(3, dtype=bool), R)
    assert pairs.tolist() == [[1, 2]]
    return dict(zip(PAIR_FEATURES, x[0].tolist(), strict=True))


def test_a_cut_cell_measures_as_one_body_two_cells_as_two() -> None:
    cut, two = _features(_cut_cell()), _features(_two_cells())
    assert cut["union_area"] == pytest.approx(1.25, abs=0.1) and two["union_area"] > 2.0
    assert cut["saddle"] > 0.5 > 0.2 > two["saddle"]  # a ridge across the cut, a valley between cells
    assert cut["distance"] < 1.0 < 1.5 < two["distance"]
    assert cut["union_ecc"] < 0.3 < 0.8 < two["union_ecc"]  # one round body; two in a row
    assert cut["contact"] > two["contact"]
    assert cut["middle_od"] < 0.8  # the cut runs through the pale centre


def _crops(case, pairs: np.ndarray | None = None, r: float = R) -> np.ndarray:
    labels, heat, stain, centres = case
    at = np.zeros((3, 2))
    for i, c in centres.items():
        at[i] = c
    pairs = np.array([[1, 2]]) if pairs is None else pairs
    return pair_crops(stain, labels, pairs, at, heat, r)


def test_the_shipped_rules_read_a_cut_cell_as_one_and_two_cells_as_two() -> None:
    # (how often they join on real fields: tests/training/test_train_pair_rule.py)
    x = np.array([[_features(c)[f] for f in PAIR_FEATURES] for c in (_cut_cell(), _two_cells())])
    crops = np.concatenate([_crops(_cut_cell()), _crops(_two_cells())])
    for name in ("locnet-v4", None):  # the logistic rule, and the shipped pair network
        rule = load_localizer(name).pair_rule
        assert rule is not None and rule.reads_crops == (name is None)
        p_cut, p_two = rule.probability(x, lambda which: crops[which])
        assert p_cut > 0.5 > 0.05 > p_two


def test_a_pair_picture_runs_from_the_first_centre_to_the_second_at_any_cell_size() -> None:
    crop = _crops(_two_cells())[0]
    assert crop.shape == (len(CROP_CHANNELS), *CROP_SHAPE)
    first, second = crop[CROP_CHANNELS.index("first")], crop[CROP_CHANNELS.index("second")]
    half = CROP_SHAPE[1] // 2
    assert first[:, :half].sum() > 0.9 * first.sum() and second[:, half:].sum() > 0.9 * second.sum()
    stain = crop[CROP_CHANNELS.index("stain")]
    assert stain[first + second > 0].mean() == pytest.approx(1.0, abs=0.02)  # stain over the pair's mean
    # the same two cells twice as large (and twice as far apart) make the same picture
    labels, heat, stain, centres = _two_cells()
    big = tuple(np.kron(a, np.ones((2, 2))) for a in (labels, heat, stain))
    twice = (big[0].astype(np.int32), big[1], big[2], {i: (2 * y + 0.5, 2 * x + 0.5) for i, (y, x) in centres.items()})
    assert np.abs(_crops(twice, r=2 * R)[0] - crop).mean() < 0.05
    # seen from the second region, the picture is the first one mirrored along the line
    import torch

    back = mirrored_pairs(torch.from_numpy(_crops(_two_cells(), np.array([[2, 1]]))), along=True, across=False)
    assert np.abs(back.numpy()[0] - crop).mean() < 0.02
    assert pair_crops(np.zeros((5, 5)), np.zeros((5, 5), np.int32), np.zeros((0, 2), np.int64), np.zeros((1, 2)),
                      np.zeros((5, 5)), R).shape == (0, len(CROP_CHANNELS), *CROP_SHAPE)


def test_a_region_joins_once_most_probable_first() -> None:
    pairs = np.array([[1, 2], [2, 3], [4, 5], [6, 7]])
    got = pairs_to_join(pairs, np.array([0.8, 0.95, 0.9, 0.3]), threshold=0.5)
    assert got == [(2, 3), (4, 5)]  # 1-2 would chain onto 2-3; 6-7 is under the threshold


def _rule(bias: float) -> PairRule:
    n = len(PAIR_FEATURES)
    return PairRule((0.0,) * n, (1.0,) * n, (0.0,) * n, bias, 0.5)


def test_segment_field_joins_what_the_rule_says() -> None:
    f = render_field(5, field_type="blood")
    det = load_localizer()
    det.pair_rule = None
    plain = segment_field(f.image, centres=det)
    det.pair_rule = _rule(-10.0)  # never joins
    assert [c.bbox for c in segment_field(f.image, centres=det).cells] == [c.bbox for c in plain.cells]
    det.pair_rule = _rule(10.0)  # joins every touching pair it can, each region once
    joined = segment_field(f.image, centres=det)
    n_plain = sum(c.kind == "rbc" for c in plain.cells)
    n_joined = sum(c.kind == "rbc" for c in joined.cells)
    assert n_joined < n_plain
    assert sum(c.kind == "nucleated" for c in joined.cells) == sum(c.kind == "nucleated" for c in plain.cells)


def test_pair_rule_round_trip_and_a_bad_file(tmp_path) -> None:
    det = build_untrained_localizer("locnet_tiny", seed=1)
    det.pair_rule = PairRule(tuple(float(i) for i in range(len(PAIR_FEATURES))), (2.0,) * len(PAIR_FEATURES),
                             (0.5,) * len(PAIR_FEATURES), -1.0, 0.7)
    det.save(tmp_path / "loc")
    back = load_localizer(tmp_path / "loc")
    assert back.pair_rule == det.pair_rule
    x = np.ones((3, len(PAIR_FEATURES)))
    assert np.allclose(back.pair_rule.probability(x), det.pair_rule.probability(x))
    assert math.isclose(float(det.pair_rule.probability(np.array(det.pair_rule.mean))), 1 / (1 + math.exp(1.0)))
    bad = json.loads((tmp_path / "loc" / "pair_rule.json").read_text())
    bad["features"] = bad["features"][:-1]
    (tmp_path / "loc" / "pair_rule.json").write_text(json.dumps(bad))
    with pytest.raises(MorphError) as err:
        load_localizer(tmp_path / "loc")
    assert err.value.code == "bad_model" and "pair_rule.json" in str(err.value.path)
    (tmp_path / "loc" / "pair_rule.json").unlink()
    assert load_localizer(tmp_path / "loc").pair_rule is None  # a folder without one joins nothing


def _pair_net(threshold: float = 0.6) -> PairNetJudge:
    import torch

    torch.manual_seed(0)
    n = len(PAIR_FEATURES)
    return PairNetJudge(create_model("pairnet_tiny"), tuple(float(i) for i in range(n)), (2.0,) * n, threshold,
                        _rule(0.0), "pairnet_tiny", provenance={"why": "test"})


def test_a_pair_network_round_trips_beats_a_logistic_rule_and_a_bad_one_is_named(tmp_path) -> None:
    det = build_untrained_localizer("locnet_tiny", seed=1)
    det.pair_rule = _pair_net()
    det.save(tmp_path / "loc")
    (tmp_path / "loc" / "pair_rule.json").write_text(json.dumps(_rule(1.0).to_dict()))  # the network comes first
    back = load_localizer(tmp_path / "loc").pair_rule
    assert isinstance(back, PairNetJudge) and back.threshold == 0.6 and back.provenance == {"why": "test"}
    x = np.random.default_rng(0).normal(size=(4, len(PAIR_FEATURES)))
    crops = np.random.default_rng(1).random((4, len(CROP_CHANNELS), *CROP_SHAPE)).astype(np.float32)
    asked: list[list[int]] = []

    def pictures(which: np.ndarray) -> np.ndarray:
        asked.append(which.tolist())
        return crops[which]

    p = back.probability(x, pictures)
    assert p.shape == (4,) and np.allclose(p, det.pair_rule.probability(x, pictures)) and ((p > 0) & (p < 1)).all()
    assert back.gate == det.pair_rule.gate and asked[0] == [0, 1, 2, 3]  # the gate (0.5 at 0.5) passes them all
    # the same pair seen from its other region reads the same
    swapped = mirrored_pairs(__import__("torch").from_numpy(crops), along=True, across=False).numpy()
    assert np.allclose(back.probability(x, lambda which: swapped[which]), p, atol=1e-6)
    # a pair the gate rules out keeps the gate's probability and is never pictured
    back.gate = _rule(-10.0)
    asked.clear()
    assert np.allclose(back.probability(x, pictures), back.gate.probability(x)) and asked == []
    assert back.probability(x[:0], pictures).shape == (0,)
    with pytest.raises(ValueError, match="pictures"):
        back.probability(x)
    cfg = json.loads((tmp_path / "loc" / "pair_net.json").read_text())
    (tmp_path / "loc" / "pair_net.json").write_text(json.dumps({**cfg, "crop_channels": ["od"]}))
    with pytest.raises(MorphError) as err:
        load_localizer(tmp_path / "loc")
    assert err.value.code == "bad_model" and str(err.value.path).endswith("pair_net.json")
    (tmp_path / "loc" / "pair_net.json").write_text(json.dumps(cfg))
    (tmp_path / "loc" / "pair_net.pt").unlink()
    with pytest.raises(MorphError) as err:
        load_localizer(tmp_path / "loc")
    assert err.value.code == "bad_model" and str(err.value.path).endswith("pair_net.pt")
