"""Findings from counts: Wilson intervals, ICSH grades, three-state decisions, sizes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from morph.errors import MorphError
from morph.findings import (
    compute_findings,
    finding_variables,
    grade_of,
    load_findings_rules,
    wilson_interval,
)
from morph.labels import RBC_LABELS


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(10, 100)
    assert lo == pytest.approx(0.0552, abs=1e-4) and hi == pytest.approx(0.1744, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 1000)
    assert lo == 0.0 and hi == pytest.approx(0.00383, abs=1e-5)
    assert wilson_interval(5, 5)[1] == 1.0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2000), st.integers(0, 2000))
def test_wilson_interval_contains_the_estimate(k: int, extra: int) -> None:
    n = k + extra
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= hi <= 1.0
    if n:
        assert lo - 1e-12 <= k / n <= hi + 1e-12


def test_grades_follow_icsh_per_morphology() -> None:
    rules = load_findings_rules()["grading"]
    # teardrops: 5-20% is 1+, 21-50% 2+, >50% 3+
    tear = rules["teardrop"]["grades"]
    assert [grade_of(p, 1, tear) for p in (4.9, 5.0, 20.0, 21.0, 50.0, 51.0)] == [
        "none", "1+", "1+", "2+", "2+", "3+"]
    # schistocytes: <1% is 1+, 1-2% 2+, >2% 3+
    sch = rules["schistocyte"]["grades"]
    assert [grade_of(p, 1, sch) for p in (0.3, 1.0, 2.0, 2.04, 2.1, 9.0)] == [
        "1+", "2+", "2+", "2+", "3+", "3+"]
    assert grade_of(0.0, 0, sch) == "none"  # no cell, no grade
    # macrocytes: 11-20% 1+
    assert grade_of(10.9, 5, rules["macrocyte"]["grades"]) == "none"
    assert grade_of(11.0, 5, rules["macrocyte"]["grades"]) == "1+"
    assert grade_of(None, 0, tear) == "not_assessed"


def test_fractions_use_assessed_red_cells_only() -> None:
    f = compute_findings({"normal": 180, "teardrop": 20, "unidentified": 300, "unclassified": 5,
                          "neutrophil": 10, "platelet": 40})
    assert f["assessed_rbc"] == 200
    td = f["rbc_morphology"]["teardrop"]
    assert td["percent"] == 10.0 and td["of"] == 200 and td["grade"] == "1+"
    assert td["ci95_percent"][0] < 10.0 < td["ci95_percent"][1]
    assert f["counted"]["unidentified"] == 300 and f["counted"]["platelets"] == 40
    assert "not counted among assessed red cells" in f["unidentified_policy"]
    assert any("unidentified" in w for w in f["warnings"])
    assert f["rbc_max_grade"] == {"grade": "1+", "morphology": "teardrop"}


def test_evidence_block() -> None:
    few = compute_findings({"normal": 150})
    assert few["evidence"]["enough"] is False
    assert few["evidence"]["message"].startswith("not enough evidence")
    assert "analyse more fields" in few["evidence"]["message"]
    ok = compute_findings({"normal": 200})
    assert ok["evidence"]["enough"] and ok["evidence"]["enough_rbc"]
    marrow = compute_findings({"normoblast": 90, "megaloblast": 20})
    assert marrow["evidence"]["enough"] and not marrow["evidence"]["enough_rbc"]


@pytest.mark.parametrize("counts, status", [
    ({"normal": 1000}, "absent"),                                  # upper bound 0.38% < 0.5%
    ({"normal": 300}, "indeterminate"),                            # 0/300: upper bound 1.3%
    ({"normal": 40}, "indeterminate"),
    ({"normal": 999, "reticulocyte": 1}, "indeterminate"),         # 0.1%, upper bound 0.57%
    ({"normal": 970, "reticulocyte": 30}, "present"),              # 3%, lower bound 2.1%
    ({}, "not_assessed"),
])
def test_reticulocytes_three_states(counts: dict[str, int], status: str) -> None:
    ret = compute_findings(counts, stain="nmb")["reticulocytes"]
    assert ret["status"] == status
    if status == "indeterminate":
        assert ret["message"] == "indeterminate: count more cells"


def test_reticulocytes_need_a_supravital_stain() -> None:
    for stain in ("wright", None):
        ret = compute_findings({"normal": 2000}, stain=stain)["reticulocytes"]
        assert ret["status"] == "not_assessed"
        assert "laboratory reticulocyte count" in ret["message"]


def test_nucleated_rbc_per_100_wbc() -> None:
    f = compute_findings({"normal": 300, "nucleated_rbc": 12, "neutrophil": 30, "lymphocyte": 10})
    assert f["nucleated_rbc"]["per_100_wbc"] == 30.0 and f["nucleated_rbc"]["status"] == "present"
    f = compute_findings({"normal": 300, "neutrophil": 60})
    assert f["nucleated_rbc"]["status"] == "absent" and f["nucleated_rbc"]["per_100_wbc"] == 0.0
    f = compute_findings({"normal": 300, "nucleated_rbc": 2})
    assert f["nucleated_rbc"]["per_100_wbc"] is None and f["nucleated_rbc"]["status"] == "present"


def test_hypersegmented_neutrophils() -> None:
    hs = compute_findings({"neutrophil": 20, "hypersegmented_neutrophil": 2})[
        "hypersegmented_neutrophils"]
    assert hs["status"] == "present"  # any with six or more lobes (two detections: see the rules)
    one = compute_findings({"neutrophil": 20, "hypersegmented_neutrophil": 1})
    assert one["hypersegmented_neutrophils"]["status"] == "indeterminate"  # may be one misread cell
    assert ">= 6 lobes" in hs["interpretation"]
    assert compute_findings({"neutrophil": 100})["hypersegmented_neutrophils"]["status"] == "absent"
    assert compute_findings({"neutrophil": 20})["hypersegmented_neutrophils"]["status"] == \
        "indeterminate"
    assert compute_findings({"normal": 5})["hypersegmented_neutrophils"]["status"] == "not_assessed"


def test_megaloblasts_among_erythroid_precursors() -> None:
    mg = compute_findings({"normoblast": 120, "megaloblast": 30})["megaloblasts"]
    assert mg["percent"] == 20.0 and mg["of"] == 150 and mg["status"] == "present"
    assert compute_findings({"normoblast": 200})["megaloblasts"]["status"] == "absent"
    assert compute_findings({"normoblast": 18, "megaloblast": 2})["megaloblasts"]["status"] == \
        "indeterminate"
    assert compute_findings({"normal": 10})["megaloblasts"]["status"] == "not_assessed"


def _cells(spec: list[tuple[str, int, float, float]]) -> list[dict]:
    return [{"label": lab, "kind": "rbc", "diameter_um": d, "eccentricity": e}
            for lab, n, d, e in spec for _ in range(n)]


def test_macro_ovalocytes_by_size_and_shape() -> None:
    cells = _cells([("normal", 80, 7.5, 0.2), ("ovalocyte", 10, 10.2, 0.7),  # macro-ovalocytes
                    ("ovalocyte", 5, 7.6, 0.7),    # oval but normal size
                    ("macrocyte", 5, 9.8, 0.1)])   # large but round
    mo = compute_findings({"normal": 80, "ovalocyte": 15, "macrocyte": 5}, cells=cells,
                          um_per_px=0.1)["macro_ovalocytes"]
    assert mo["count"] == 10 and mo["of"] == 100 and mo["percent"] == 10.0 and mo["grade"] == "1+"


def test_macrocyte_shape_splits_the_macrocytes_into_oval_and_round() -> None:
    cells = _cells([("normal", 80, 7.5, 0.2), ("ovalocyte", 10, 10.2, 0.7), ("macrocyte", 15, 9.8, 0.1),
                    ("ovalocyte", 5, 7.6, 0.7)])  # oval but normal size: not a macrocyte
    shape = compute_findings({"normal": 80, "ovalocyte": 15, "macrocyte": 15}, cells=cells)["macrocyte_shape"]
    assert (shape["oval"], shape["round"], shape["of"]) == (10, 15, 25)
    assert shape["oval_percent"] == 40.0 and shape["pattern"] == "mostly round"
    few = compute_findings({"normal": 80, "macrocyte": 5}, cells=_cells([("normal", 80, 7.5, 0.2),
                                                                         ("macrocyte", 5, 9.8, 0.1)]))
    assert few["macrocyte_shape"]["oval_percent"] is None  # 5 macrocytes show no pattern
    assert few["macrocyte_shape"]["pattern"] == "not_assessed" and "fewer than 20" in few["macrocyte_shape"]["reason"]
    assert compute_findings({"normal": 80})["macrocyte_shape"]["reason"] == "cell sizes not given"


def test_size_findings_fall_back_without_cells() -> None:
    f = compute_findings({"normal": 300, "ovalocyte": 50})
    assert f["macro_ovalocytes"]["grade"] == "not_assessed"
    assert f["macro_ovalocytes"]["reason"] == "cell sizes not given"
    assert f["anisocytosis"]["grade"] == "not_assessed"
    f = compute_findings({"normal": 3}, cells=[{"label": "normal", "kind": "rbc", "diameter_um": None,
                                                 "eccentricity": None}] * 3)
    assert f["macro_ovalocytes"]["grade"] == "not_assessed"


def test_anisocytosis_cv_of_diameters() -> None:
    even = _cells([("normal", 50, 7.5, 0.2)])
    assert compute_findings({"normal": 50}, cells=even)["anisocytosis"]["grade"] == "none"
    mixed = _cells([("normal", 25, 5.5, 0.2), ("normal", 25, 9.5, 0.2)])
    an = compute_findings({"normal": 50}, cells=mixed)["anisocytosis"]
    assert an["cv_percent"] == pytest.approx(100 * 2.0202 / 7.5, abs=0.05)
    assert an["grade"] == "3+"
    few = compute_findings({"normal": 5}, cells=_cells([("normal", 5, 7.5, 0.2)]))["anisocytosis"]
    assert few["grade"] == "not_assessed"


@pytest.mark.parametrize("counts, code", [
    ({"blast": 1}, "bad_label"), ({"normal": -1}, "bad_request"), ({"normal": 1.5}, "bad_request"),
    ({"normal": True}, "bad_request"), ({"normal": "3"}, "bad_request"), (["normal"], "bad_request"),
])
def test_bad_counts(counts, code) -> None:
    with pytest.raises(MorphError) as e:
        compute_findings(counts)
    assert e.value.code == code


def test_bad_cells() -> None:
    with pytest.raises(MorphError) as e:
        compute_findings({"normal": 1}, cells=[{"kind": "rbc"}])
    assert e.value.path == "cells[0]"


def test_variables_cover_every_red_cell_label() -> None:
    v = finding_variables(compute_findings({"normal": 10}))
    for lab in RBC_LABELS:
        assert f"rbc.{lab}.percent" in v
    assert v["reticulocytes.status"] == "not_assessed"
    assert v["evidence.enough"] is False


def test_elliptocytes_of_normal_size_apart_from_macro_ovalocytes_and_pencil_cells() -> None:
    cells = _cells([("normal", 60, 7.5, 0.2), ("elliptocyte", 20, 7.4, 0.88),   # HE-like
                    ("ovalocyte", 10, 10.3, 0.7),                                # macro-ovalocytes
                    ("elliptocyte", 5, 6.2, 0.97), ("teardrop", 5, 6.0, 0.96)])  # pencil cells
    f = compute_findings({"normal": 60, "elliptocyte": 25, "ovalocyte": 10, "teardrop": 5}, cells=cells)
    assert f["elliptocytes"]["count"] == 20 and f["elliptocytes"]["grade"] == "1+"  # 20%
    assert f["macro_ovalocytes"]["count"] == 10
    assert f["pencil_cells"]["count"] == 10 and "geometry" in f["pencil_cells"]["definition"]
    assert f["teardrops"]["count"] == 0 and f["teardrops"]["pencil_shaped_left_out"] == 5
    v = finding_variables(f)
    assert v["elliptocytes.ci95_low"] < v["elliptocytes.percent"] == 20.0
    # without sizes only the elliptocyte label counts and pencil cells cannot be assessed
    f = compute_findings({"normal": 60, "elliptocyte": 25, "ovalocyte": 10, "teardrop": 5})
    assert f["elliptocytes"]["count"] == 25 and "sizes not given" in f["elliptocytes"]["definition"]
    assert f["pencil_cells"]["grade"] == "not_assessed" and f["teardrops"]["count"] == 5
    assert f["basophilic_stippling"]["status"] == "not_assessed"


def test_evidence_says_how_many_more_fields() -> None:
    cells = [{"label": "normal", "kind": "rbc", "diameter_um": 7.5, "eccentricity": 0.2, "field": i % 5}
             for i in range(170)]
    ev = compute_findings({"normal": 170}, cells=cells)["evidence"]
    assert ev["fields"] == 5 and ev["rbc_per_field"] == 34.0 and ev["more_fields_needed"] == 1
    assert "about 1 more field at this case's 34 red cells per field" in ev["message"]
    assert compute_findings({"normal": 170})["evidence"]["more_fields_needed"] is None


def test_a_field_full_of_artefact_is_set_aside_not_pooled() -> None:
    good = [("normal", 90), ("elliptocyte", 10)]
    bad = [("unidentified", 60), ("burr_cell", 20), ("normal", 20)]
    cells, counts = [], {}
    for fld, rows in enumerate([good, good, good, bad]):
        for lab, n in rows:
            counts[lab] = counts.get(lab, 0) + n
            cells += [{"label": lab, "kind": "rbc", "diameter_um": 7.4, "eccentricity": 0.3,
                       "field": fld}] * n
    f = compute_findings(counts, cells=cells)
    assert [s["field"] for s in f["field_agreement"]["set_aside"]] == [3]
    assert f["assessed_rbc"] == 300 and f["rbc_morphology"]["burr_cell"]["count"] == 0
    assert any("field 3 set aside" in w for w in f["warnings"])
    # pooled blindly it would have graded burr cells 1+; a field that merely differs is kept
    cells2 = [dict(c, label="elliptocyte") if c["field"] == 0 else c for c in cells if c["field"] < 3]
    f2 = compute_findings({"normal": 180, "elliptocyte": 120}, cells=cells2)
    assert f2["field_agreement"]["set_aside"] == [] and f2["field_agreement"]["disagreements"]


def test_indeterminate_reticulocytes_say_how_many_cells_and_fields_would_decide() -> None:
    cells = [{"label": "normal", "kind": "rbc", "diameter_um": 7.5, "eccentricity": 0.2, "field": i % 5}
             for i in range(270)]
    ret = compute_findings({"normal": 270}, cells=cells, stain="nmb")["reticulocytes"]
    assert ret["status"] == "indeterminate"
    # 0 of n is "absent" once the upper bound z^2 / (n + z^2) is under 0.5%: n >= 765
    assert ret["red_cells_to_decide"] == 765 and ret["more_fields_to_decide"] == 10  # 54 per field
    assert compute_findings({"normal": 765}, stain="nmb")["reticulocytes"]["status"] == "absent"


def test_one_hypersegmented_neutrophil_among_few_is_not_present() -> None:
    # 1 of 3 has a 95% lower bound over 5%, but one detection may be one misread cell
    hs = compute_findings({"neutrophil": 2, "hypersegmented_neutrophil": 1})["hypersegmented_neutrophils"]
    assert hs["status"] == "indeterminate"
    assert compute_findings({"neutrophil": 150, "hypersegmented_neutrophil": 1})[
        "hypersegmented_neutrophils"]["status"] == "absent"  # upper bound 3.7% < 5%
