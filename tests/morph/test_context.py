"""Clinical context validation: every field optional, strict types, impossible values refused."""

from __future__ import annotations

import math
from typing import Any

import pytest

from morph.context import (
    CONTEXT_FIELDS,
    STAINS,
    ClinicalContext,
    check_stain,
    check_um_per_px,
    context_from_text,
    parse_context_json,
    read_context_file,
    validate_context,
)
from morph.errors import MorphError

CONTRACT_FIELDS = (
    "hb_g_dl", "mcv_fl", "rbc_10e12_l", "rdw_percent", "ldh_u_l", "reticulocyte_percent",
    "wbc_10e9_l", "platelets_10e9_l", "b12_pg_ml", "folate_ng_ml", "ferritin_ng_ml", "hbf_percent",
    "hba2_percent", "age_years", "splenomegaly", "early_satiety", "gastric_surgery",
    "sickle_cell_disease", "chronic_hemolysis", "transfusion_dependent", "post_hsct", "post_car_t",
    "donor_chimerism_percent", "mrd", "myelotoxic_drugs", "marrow_cellularity", "marrow_fibrosis",
)

FULL = {
    "hb_g_dl": 9.5, "mcv_fl": 104, "rbc_10e12_l": 3.1, "rdw_percent": 16.2, "ldh_u_l": 820,
    "reticulocyte_percent": 0.4, "wbc_10e9_l": 3.2, "platelets_10e9_l": 120, "b12_pg_ml": 150,
    "folate_ng_ml": 6.1, "ferritin_ng_ml": 240, "hbf_percent": 1.0, "hba2_percent": 2.6,
    "age_years": 71, "splenomegaly": False, "early_satiety": False, "gastric_surgery": True,
    "sickle_cell_disease": False, "chronic_hemolysis": False, "transfusion_dependent": False,
    "post_hsct": False, "post_car_t": False, "donor_chimerism_percent": 100, "mrd": "negative",
    "myelotoxic_drugs": False, "marrow_cellularity": "normo", "marrow_fibrosis": False,
}


def test_fields_are_exactly_the_contract() -> None:
    assert tuple(CONTEXT_FIELDS) == CONTRACT_FIELDS
    for name, spec in CONTEXT_FIELDS.items():
        assert spec["type"] in ("number", "boolean", "enum") and spec["description"], name


def test_empty_and_none_give_an_empty_context() -> None:
    assert validate_context(None) == ClinicalContext()
    assert validate_context({}).to_dict() == {}
    assert validate_context({"hb_g_dl": None}).hb_g_dl is None


def test_full_context_round_trips() -> None:
    ctx = validate_context(FULL)
    assert ctx.to_dict() == {k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v)
                             for k, v in FULL.items()}
    assert ctx.mentzer_index == pytest.approx(104 / 3.1)
    assert ctx.derived()["mentzer_index"] == pytest.approx(33.55)
    assert validate_context(ctx) is ctx


def test_mentzer_needs_both_values() -> None:
    assert validate_context({"mcv_fl": 70}).mentzer_index is None


BAD: list[tuple[str, Any, str]] = [
    # unknown keys
    ("hb", 9.0, "unknown clinical-context field"),
    ("HB_G_DL", 9.0, "unknown clinical-context field"),
    ("stain", "nmb", "unknown clinical-context field"),
    # wrong types
    ("hb_g_dl", "abc", "must be a number"),
    ("hb_g_dl", "9.5", "must be a number"),
    ("hb_g_dl", True, "must be a number"),
    ("hb_g_dl", [9.5], "must be a number"),
    ("age_years", {"value": 3}, "must be a number"),
    ("splenomegaly", 1, "must be true or false"),
    ("splenomegaly", "yes", "must be true or false"),
    ("splenomegaly", "true", "must be true or false"),
    ("post_hsct", 0, "must be true or false"),
    ("mrd", "pos", "must be 'positive' or 'negative'"),
    ("mrd", True, "must be 'positive' or 'negative'"),
    ("mrd", "Positive", "must be 'positive' or 'negative'"),
    ("marrow_cellularity", "normal", "must be 'hypo' or 'normo' or 'hyper'"),
    ("marrow_cellularity", 2, "must be 'hypo' or 'normo' or 'hyper'"),
    # impossible values
    ("hb_g_dl", -1.0, "impossible"),
    ("hb_g_dl", 0, "impossible"),
    ("hb_g_dl", 45, "impossible"),
    ("mcv_fl", 0, "impossible"),
    ("rbc_10e12_l", 0, "impossible"),
    ("donor_chimerism_percent", 101, "impossible"),
    ("donor_chimerism_percent", -0.1, "impossible"),
    ("reticulocyte_percent", 120, "impossible"),
    ("rdw_percent", 100.5, "impossible"),
    ("hbf_percent", 150, "impossible"),
    ("hba2_percent", -2, "impossible"),
    ("age_years", 200, "impossible"),
    ("age_years", -1, "impossible"),
    ("platelets_10e9_l", -5, "impossible"),
    ("wbc_10e9_l", -0.5, "impossible"),
    ("ferritin_ng_ml", -3, "impossible"),
    ("b12_pg_ml", -100, "impossible"),
    ("folate_ng_ml", -1, "impossible"),
    ("ldh_u_l", -10, "impossible"),
    ("hb_g_dl", math.nan, "finite"),
    ("ldh_u_l", math.inf, "finite"),
]


@pytest.mark.parametrize("field, value, msg", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_bad_context_names_the_field(field: str, value: Any, msg: str) -> None:
    with pytest.raises(MorphError) as e:
        validate_context({**FULL, field: value})
    assert e.value.code == "bad_context"
    assert e.value.path == field
    assert field in e.value.message and msg in e.value.message


def test_every_field_is_covered_by_a_bad_case() -> None:
    assert {f for f, _, _ in BAD} >= set(CONTEXT_FIELDS) - {
        "early_satiety", "gastric_surgery", "sickle_cell_disease", "chronic_hemolysis",
        "transfusion_dependent", "post_car_t", "myelotoxic_drugs", "marrow_fibrosis",
    }
    # ... and every boolean refuses a number
    for name, spec in CONTEXT_FIELDS.items():
        if spec["type"] == "boolean":
            with pytest.raises(MorphError) as e:
                validate_context({name: 1})
            assert e.value.path == name


@pytest.mark.parametrize("raw", [[("hb_g_dl", 9)], "hb_g_dl=9", 9])
def test_context_must_be_an_object(raw: Any) -> None:
    with pytest.raises(MorphError) as e:
        validate_context(raw)
    assert e.value.code == "bad_context"


def test_boundary_values_are_accepted() -> None:
    ctx = validate_context({"donor_chimerism_percent": 100, "reticulocyte_percent": 0,
                            "age_years": 0, "wbc_10e9_l": 0, "hb_g_dl": 0.1})
    assert ctx.donor_chimerism_percent == 100.0 and ctx.reticulocyte_percent == 0.0


# -- the one place for stains, the scale range and context parsing ---------------------------


@pytest.mark.parametrize("value", [0.01, 0.1, 5, 5.0, None])
def test_scale_rule_accepts_the_plausible_range(value):
    assert check_um_per_px(value) == (None if value is None else float(value))


@pytest.mark.parametrize("value", [0, 0.009, 5.01, -1, float("nan"), float("inf"), "0.1", True])
def test_scale_rule_rejects_the_rest_naming_the_field(value):
    with pytest.raises(MorphError) as ei:
        check_um_per_px(value)
    assert ei.value.code == "bad_request" and ei.value.path == "um_per_px"


def test_stains():
    assert STAINS == ("wright", "nmb")
    assert check_stain("nmb") == "nmb" and check_stain(None, optional=True) is None
    for bad in ("giemsa", None):
        with pytest.raises(MorphError) as ei:
            check_stain(bad)
        assert ei.value.path == "stain"


def test_parse_context_json():
    assert parse_context_json(None) is None and parse_context_json("  ") is None
    assert parse_context_json('{"hb_g_dl": 9}') == {"hb_g_dl": 9}
    for text, path in (("{oops", "context"), ("[1]", "context"), ('{"hb_g_dl": -1}', "hb_g_dl")):
        with pytest.raises(MorphError) as ei:
            parse_context_json(text)
        assert (ei.value.code, ei.value.path) == ("bad_context", path)


def test_read_context_file_names_the_file_and_field(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"splenomegaly": "yes"}')
    with pytest.raises(MorphError) as ei:
        read_context_file(p)
    assert ei.value.path == str(p) and ei.value.detail == {"field": "splenomegaly"}
    with pytest.raises(MorphError) as ei:
        read_context_file(tmp_path / "missing.json")
    assert ei.value.code == "file_not_found"


def test_context_from_text_cells():
    assert context_from_text({"hb_g_dl": "9.5", "splenomegaly": "yes", "mcv_fl": ""}) == {
        "hb_g_dl": 9.5, "splenomegaly": True}
    with pytest.raises(MorphError) as ei:
        context_from_text({"splenomegaly": "perhaps"})
    assert ei.value.path == "splenomegaly"
