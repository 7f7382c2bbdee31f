"""`morph diagnose`: both input shapes, context override, JSON output and bad input (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from morph.pipeline import DISCLAIMER
from morph.types import CaseReport, Cell, FieldResult
from morph_cli.main import main

B12_CONTEXT = {"hb_g_dl": 7.9, "ldh_u_l": 1450, "mcv_fl": 114, "gastric_surgery": True}


def _write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _cell(i: int, label: str, d_um: float, ecc: float, border: bool = False) -> Cell:
    kind = "rbc" if label not in ("neutrophil", "hypersegmented_neutrophil", "lymphocyte") else "nucleated"
    return Cell(id=i, x=10.0 + i, y=10.0, bbox=(i, 0, i + 5, 5), kind=kind, area_px=400.0,
                diameter_px=d_um * 10, eccentricity=ecc, touches_border=border, label=label,
                confidence=0.9, diameter_um=d_um)


def _report(with_context: bool = True) -> dict[str, Any]:
    """A report in the exact shape `morph analyze --json` writes (built from the report types)."""
    spec = ([("normal", 7.5, 0.2)] * 170 + [("ovalocyte", 10.2, 0.7)] * 40
            + [("neutrophil", 11.0, 0.2)] * 18 + [("hypersegmented_neutrophil", 13.0, 0.2)] * 2)
    cells_a = [_cell(i, lab, d, e) for i, (lab, d, e) in enumerate(spec[:100])]
    cells_b = [_cell(i, lab, d, e) for i, (lab, d, e) in enumerate(spec[100:])]
    # cut by the border: never counted, whatever the label
    cells_b += [_cell(900 + i, "teardrop", 7.0, 0.8, border=True) for i in range(50)]
    fields = [
        FieldResult(path="a.png", width=640, height=480, um_per_px=0.1, median_rbc_diameter_um=7.5,
                    cells=cells_a),
        FieldResult(path="b.png", width=640, height=480, um_per_px=0.1, median_rbc_diameter_um=7.6,
                    cells=cells_b),
        FieldResult(path="broken.jpg", width=0, height=0, um_per_px=0.1, median_rbc_diameter_um=None,
                    error={"code": "truncated_image", "message": "truncated"}),
    ]
    rep = CaseReport(model={"name": "tiny", "version": "0"}, images=fields, counts={"stale": 1},
                     disclaimer=DISCLAIMER).to_dict()
    if with_context:
        rep["context"] = B12_CONTEXT
    return rep


def test_diagnose_counts_file_prints_ranking_and_writes_json(tmp_path: Path, capsys) -> None:
    case = _write(tmp_path / "case.json", {
        "counts": {"normal": 300, "ovalocyte": 40, "macrocyte": 30, "neutrophil": 37,
                   "hypersegmented_neutrophil": 3, "lymphocyte": 10},
        "um_per_px": 0.1, "context": B12_CONTEXT,
    })
    out = tmp_path / "out" / "dx.json"
    assert main(["diagnose", str(case), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1. b12_folate_deficiency" in text
    assert "for:" in text and "hypersegmented neutrophils" in text
    assert DISCLAIMER in text
    data = json.loads(out.read_text())
    assert data["source"] == "counts"
    assert data["differentials"][0]["id"] == "b12_folate_deficiency"
    assert data["disclaimer"] == DISCLAIMER
    assert data["context"]["gastric_surgery"] is True
    assert {"evidence", "reticulocytes", "rbc_morphology"} <= set(data["findings"])
    assert set(data["differentials"][0]) >= {"id", "name", "score", "evidence_for", "evidence_against",
                                             "missing", "next_tests", "references"}


def test_diagnose_report_recomputes_counts_from_non_border_cells(tmp_path: Path, capsys) -> None:
    case = _write(tmp_path / "report.json", _report())
    out = tmp_path / "dx.json"
    assert main(["diagnose", str(case), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["source"] == "report"
    assert data["counts"] == {"hypersegmented_neutrophil": 2, "neutrophil": 18, "normal": 170,
                              "ovalocyte": 40}
    assert data["um_per_px"] == 0.1
    # sizes from the report's cells: 40 large oval cells of 210 red cells
    assert data["findings"]["macro_ovalocytes"]["count"] == 40
    assert data["findings"]["anisocytosis"]["grade"] != "not_assessed"
    assert data["differentials"][0]["id"] == "b12_folate_deficiency"  # context taken from the file
    assert "(report)" in capsys.readouterr().out


def test_context_file_overrides_fields(tmp_path: Path) -> None:
    case = _write(tmp_path / "report.json", _report())
    ctx = _write(tmp_path / "ctx.json", {"b12_pg_ml": 650, "folate_ng_ml": 14, "age_years": 78,
                                          "gastric_surgery": False})
    plain, over = tmp_path / "plain.json", tmp_path / "over.json"
    assert main(["diagnose", str(case), "--json", str(plain)]) == 0
    assert main(["diagnose", str(case), "--context", str(ctx), "--json", str(over)]) == 0
    a, b = json.loads(plain.read_text()), json.loads(over.read_text())
    assert b["context"]["gastric_surgery"] is False and b["context"]["hb_g_dl"] == 7.9
    score = {name: {d["id"]: d["score"] for d in x["differentials"]} for name, x in (("a", a), ("b", b))}
    # normal vitamins in an elderly patient: deficiency less likely, myelodysplasia more
    assert score["b"]["b12_folate_deficiency"] < score["a"]["b12_folate_deficiency"]
    assert score["b"]["myelodysplastic_syndrome"] > score["a"]["myelodysplastic_syndrome"]


def test_stain_option_lets_the_smear_decide_reticulocytes(tmp_path: Path) -> None:
    case = _write(tmp_path / "c.json", {"counts": {"normal": 1000}})
    out = tmp_path / "dx.json"
    assert main(["diagnose", str(case), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["findings"]["reticulocytes"]["status"] == "not_assessed"
    assert main(["diagnose", str(case), "--stain", "nmb", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["findings"]["reticulocytes"]["status"] == "absent"


def test_too_few_cells(tmp_path: Path, capsys) -> None:
    case = _write(tmp_path / "c.json", {"counts": {"normal": 30}, "stain": "nmb"})
    assert main(["diagnose", str(case)]) == 0
    text = capsys.readouterr().out
    assert "1. insufficient_evidence" in text
    assert "not enough evidence" in text and "indeterminate: count more cells" in text


@pytest.mark.parametrize("content, code, fragment", [
    ("not json", "bad_request", "not valid JSON"),
    ([1, 2], "bad_request", "expected a JSON object"),
    ({"cells": []}, "bad_request", "not a case"),
    ({"counts": {"normal": 10}, "contxt": {}}, "bad_request", "unknown key"),
    ({"counts": {"blast": 10}}, "bad_request", "unknown label"),
    ({"counts": {"normal": -3}}, "bad_request", "whole number"),
    ({"counts": {"normal": 10}, "um_per_px": -1}, "bad_request", "um_per_px"),
    ({"counts": {"normal": 10}, "context": {"hb_g_dl": -2}}, "bad_context", "hb_g_dl"),
    ({"counts": {"normal": 10}, "context": {"chimerism": 50}}, "bad_context", "chimerism"),
    ({"counts": {"normal": 10}, "context": {"splenomegaly": 1}}, "bad_context", "splenomegaly"),
    ({"counts": {"normal": 10}, "context": ["hb_g_dl"]}, "bad_context", "object"),
    ({"images": [{"cells": [{"kind": "rbc"}]}]}, "bad_request", "label"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path, capsys, content, code, fragment
                                                ) -> None:
    p = tmp_path / "case.json"
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    assert main(["diagnose", str(p)]) == 2
    err = capsys.readouterr().err
    assert f"[{code}]" in err and fragment in err and str(p) in err


def test_bad_context_file_is_named(tmp_path: Path, capsys) -> None:
    case = _write(tmp_path / "c.json", {"counts": {"normal": 300}})
    ctx = _write(tmp_path / "ctx.json", {"donor_chimerism_percent": 130})
    assert main(["diagnose", str(case), "--context", str(ctx)]) == 2
    err = capsys.readouterr().err
    assert "ctx.json" in err and "donor_chimerism_percent" in err and "[bad_context]" in err


def test_missing_case_file(tmp_path: Path, capsys) -> None:
    assert main(["diagnose", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_analyze_report_round_trips_through_diagnose(tmp_path: Path, disc_field, capsys) -> None:
    """The real `morph analyze --json` output is accepted as it is."""
    img, _ = disc_field(n=10, seed=3)
    Image.fromarray(img).save(tmp_path / "f.png")
    ctx = _write(tmp_path / "ctx.json", {"hb_g_dl": 6.1, "sickle_cell_disease": True})
    rep = tmp_path / "r.json"
    assert main(["analyze", str(tmp_path / "f.png"), "--stain", "nmb", "--context", str(ctx),
                 "--json", str(rep)]) in (0, 1)
    report = json.loads(rep.read_text())
    assert report["differentials"] and report["findings"]["context"]["hb_g_dl"] == 6.1
    out = tmp_path / "dx.json"
    assert main(["diagnose", str(rep), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["source"] == "report"
    # stain and context travel inside the report's findings
    assert data["stain"] == "nmb" and data["context"]["sickle_cell_disease"] is True
    assert [d["id"] for d in data["differentials"]] == [d["id"] for d in report["differentials"]]


def test_scale_outside_the_range_is_one_rule_everywhere(tmp_path: Path, capsys) -> None:
    case = _write(tmp_path / "c.json", {"counts": {"normal": 300}, "um_per_px": 10})
    assert main(["diagnose", str(case)]) == 2
    assert "um_per_px" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ei:
        main(["analyze", str(case), "--um-per-px", "10"])
    assert ei.value.code == 2
