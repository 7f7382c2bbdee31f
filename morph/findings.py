"""Findings: from per-label cell counts (and cell sizes) to the quantities a hematologist reads.

Every threshold lives in ``morph/rules/findings.yaml`` with its source. The rules engine
(:mod:`morph.differentials`) reads the findings through :func:`finding_variables`.

Conventions:

* **Assessed red cells** are cells with a red-cell label (:data:`morph.labels.RBC_LABELS`,
  which includes ``uncategorised`` and ``reticulocyte``). Morphology fractions use them as the
  denominator.
* **Unidentified** cells (the classifier's confidence under its threshold) and
  **unclassified** cells (no classifier ran) are *not* assessed: they are left out of every
  fraction, counted separately, and a warning is added when they are a large share.
* Fractions come with a 95% Wilson score interval; present/absent decisions are taken only
  when the interval lies wholly on one side of the threshold, otherwise the state is
  ``indeterminate`` ("count more cells"). ``not_assessed`` means the input cannot say
  (no such cells counted, no sizes, or the wrong stain).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import MorphError
from .labels import (
    MARROW_LABELS,
    NUCLEATED_LABELS,
    PLATELET,
    RBC_LABELS,
    UNCLASSIFIED,
    UNIDENTIFIED,
)

log = logging.getLogger(__name__)

RULES_DIR = Path(__file__).resolve().parent / "rules"
FINDINGS_RULES_PATH = RULES_DIR / "findings.yaml"

#: Grades in increasing order; ``not_assessed`` sits outside the order.
GRADES: tuple[str, ...] = ("none", "1+", "2+", "3+")
#: Three-state answers (plus ``not_assessed``) for present/absent findings.
STATES: tuple[str, ...] = ("absent", "indeterminate", "present")

WHITE_CELL_LABELS: tuple[str, ...] = tuple(
    lab for lab in NUCLEATED_LABELS if lab != "nucleated_rbc"
)
NEUTROPHIL_LABELS: tuple[str, ...] = ("neutrophil", "hypersegmented_neutrophil")
_Z95 = 1.959963984540054

UNIDENTIFIED_POLICY = (
    "Unidentified cells (classifier confidence under its threshold) and unclassified cells "
    "(no classifier) are not counted among assessed red cells; every fraction uses assessed "
    "red cells only, and the number left out is reported."
)


# -- statistics ------------------------------------------------------------------------------
def wilson_interval(k: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """95% Wilson score interval for ``k`` successes out of ``n`` (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def grade_of(percent: float | None, count: int, grades: Mapping[str, float]) -> str:
    """The highest grade whose inclusive lower bound ``percent`` (rounded to 0.1) reaches.

    Zero cells is always ``"none"``; ``None`` percent gives ``"not_assessed"``.
    """
    if percent is None:
        return "not_assessed"
    if count <= 0:
        return "none"
    p = round(percent, 1)
    out = "none"
    for g in GRADES[1:]:
        if g in grades and p >= float(grades[g]):
            out = g
    return out


def grade_rank(grade: str | None) -> int | None:
    """Order of a grade (none=0 .. 3+=3); ``None`` for not_assessed/unknown."""
    return GRADES.index(grade) if grade in GRADES else None


def _three_state(k: int, n: int, threshold: float) -> str:
    """present / absent / indeterminate from the Wilson interval of k/n against ``threshold``."""
    if n <= 0:
        return "not_assessed"
    lo, hi = wilson_interval(k, n)
    if hi < threshold:
        return "absent"
    if lo >= threshold:
        return "present"
    return "indeterminate"


def _fraction(k: int, n: int) -> dict[str, Any]:
    if n <= 0:
        return {"count": k, "of": n, "percent": None, "ci95_percent": None}
    lo, hi = wilson_interval(k, n)
    return {
        "count": k,
        "of": n,
        "percent": round(100.0 * k / n, 2),
        "ci95_percent": [round(100.0 * lo, 2), round(100.0 * hi, 2)],
    }


# -- rules file ------------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _load_rules_cached(path: str) -> dict[str, Any]:
    from .io import read_yaml

    data = read_yaml(path)
    _validate_rules(data, path)
    return data


def load_findings_rules(path: str | Path | None = None) -> dict[str, Any]:
    """Read (once) and check the findings thresholds file."""
    return _load_rules_cached(str(path or FINDINGS_RULES_PATH))


def _validate_rules(data: Any, path: str) -> None:
    def bad(msg: str) -> MorphError:
        return MorphError("bad_config", msg, path=path)

    if not isinstance(data, dict):
        raise bad("the findings rules file must hold a mapping")
    for key in ("evidence", "grading", "poikilocytes", "red_cell_destruction", "macro_ovalocytes", "macrocyte_shape",
                "reticulocytes", "nucleated_rbc", "hypersegmented_neutrophils", "megaloblasts", "anisocytosis",
                "elliptocytes", "pencil_cells", "teardrops", "field_agreement", "abnormal_rbc"):
        if not isinstance(data.get(key), dict):
            raise bad(f"missing section {key!r}")
    for lab, spec in data["grading"].items():
        if lab not in RBC_LABELS:
            raise bad(f"grading names {lab!r}, which is not a red-cell label")
        if spec is not None:
            _check_grades(spec.get("grades"), f"grading.{lab}", bad)
    for sect in ("poikilocytes", "macro_ovalocytes", "anisocytosis", "elliptocytes", "pencil_cells",
                 "teardrops"):
        _check_grades(data[sect].get("grades"), sect, bad)
    for sect in ("poikilocytes", "red_cell_destruction", "macro_ovalocytes", "elliptocytes",
                 "pencil_cells"):
        for lab in data[sect].get("labels", []):
            if lab not in RBC_LABELS:
                raise bad(f"{sect}.labels names {lab!r}, which is not a red-cell label")


def _check_grades(grades: Any, where: str, bad: Any) -> None:
    if not isinstance(grades, dict) or not grades:
        raise bad(f"{where}: 'grades' must map 1+/2+/3+ to a lower bound in percent")
    last = -math.inf
    for g in GRADES[1:]:
        if g in grades:
            v = grades[g]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < last:
                raise bad(f"{where}: grade bounds must be numbers increasing from 1+ to 3+")
            last = float(v)
    if set(grades) - set(GRADES[1:]):
        raise bad(f"{where}: unknown grade(s) {sorted(set(grades) - set(GRADES[1:]))}")


# -- input checks ----------------------------------------------------------------------------
def validate_counts(counts: Mapping[str, Any]) -> dict[str, int]:
    """Check per-label counts: known labels (else ``bad_label``), whole numbers >= 0
    (else ``bad_request``); ``path`` is ``counts.<label>``."""
    if not isinstance(counts, Mapping):
        raise MorphError("bad_request", "counts must be an object of label -> number of cells",
                         path="counts")
    known = set(RBC_LABELS) | set(NUCLEATED_LABELS) | set(MARROW_LABELS) | {
        UNIDENTIFIED, UNCLASSIFIED, PLATELET}
    out: dict[str, int] = {}
    for lab, n in counts.items():
        if lab not in known:
            raise MorphError(
                "bad_label", f"unknown label {lab!r} in counts; see morph.labels for the vocabulary",
                path=f"counts.{lab}",
            )
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise MorphError(
                "bad_request", f"count for {lab!r} must be a whole number >= 0, got {n!r}",
                path=f"counts.{lab}",
            )
        out[lab] = out.get(lab, 0) + int(n)
    return out


def _num_or_none(v: Any) -> float | None:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _clean_cells(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, c in enumerate(cells):
        if not isinstance(c, Mapping) or not isinstance(c.get("label"), str):
            raise MorphError("bad_request", "each cell must be an object with a 'label'",
                             path=f"cells[{i}]")
        d = _num_or_none(c.get("diameter_um"))
        e = _num_or_none(c.get("eccentricity"))
        fld = c.get("field")
        out.append({
            "label": c["label"],
            "kind": c.get("kind"),
            "diameter_um": d if d is not None and d > 0 else None,
            "eccentricity": e,
            "field": fld if isinstance(fld, (int, str)) and not isinstance(fld, bool) else None,
        })
    return out


# -- findings ----------------------------------------------------------------------------------
def compute_findings(
    counts: Mapping[str, int],
    *,
    um_per_px: float | None = None,
    cells: Sequence[Mapping[str, Any]] | None = None,
    stain: str | None = None,
    rules: Mapping[str, Any] | None = None,
    scale: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Turn counts (and optional per-cell sizes) into the findings dict (JSON-ready).

    Args:
        counts: label -> number of cells (non-border cells of the whole case).
        um_per_px: the scale the sizes were measured at (reported; sizes come in ``cells``).
        cells: ``[{"label", "kind", "diameter_um", "eccentricity", "field"}]`` for size
            findings (macro-ovalocytes, elliptocytes, pencil cells, anisocytosis) and, when
            ``field`` is given, per-field checks; ``None`` leaves size findings ``not_assessed``.
        stain: ``"nmb"`` (supravital: reticulocytes assessed); ``"wright"`` or ``None``
            (unknown) leave reticulocytes ``not_assessed`` - zero reticulocytes on a Wright
            smear says nothing about the reticulocyte count.
        rules: thresholds (default: ``morph/rules/findings.yaml``).
        scale: the case's scale as the pipeline resolved it (``{"um_per_px", "source"}``, with a
            ``note`` when it was estimated from the cells), reported instead of ``um_per_px``; its
            note joins the warnings.
    """
    r = rules if rules is not None else load_findings_rules()
    c = validate_counts(counts)
    cell_list = _clean_cells(cells) if cells is not None else None
    agreement = _field_agreement(cell_list, r.get("field_agreement"))
    if agreement["set_aside"]:
        c, cell_list = _without_fields(c, cell_list, set(agreement["set_aside"]))
    n = _tally(c)
    warnings = _left_out_warning(n, r["evidence"]) + agreement["warnings"]
    if scale is not None and scale.get("note"):
        warnings.append(str(scale["note"]))
    morph_out, max_grade = _rbc_morphology(c, n["rbc"], r["grading"])
    evidence = _evidence(n, r["evidence"], cell_list)
    shapes = _shape_findings(c, cell_list, n["rbc"], r)
    get = c.get
    return {
        "assessed_rbc": n["rbc"],
        "counted": {
            "red_cells": n["rbc"],
            "white_cells": n["wbc"],
            "neutrophils": n["neut"],
            "nucleated_rbc": n["nrbc"],
            "erythroid_precursors": n["ery"],
            "platelets": get(PLATELET, 0),
            "unidentified": n["unid"],
            "unclassified": n["uncl"],
        },
        "unidentified_policy": UNIDENTIFIED_POLICY,
        "evidence": evidence,
        "rbc_morphology": morph_out,
        "rbc_max_grade": max_grade,
        "poikilocytes": _graded_group(c, n["rbc"], r["poikilocytes"]),
        "red_cell_destruction": _graded_group(c, n["rbc"], r["red_cell_destruction"]),
        "abnormal_rbc": _abnormal_rbc(c, n["rbc"], r["abnormal_rbc"]),
        **shapes,
        "reticulocytes": _reticulocytes(get("reticulocyte", 0), n["rbc"], stain, r["reticulocytes"],
                                        evidence["rbc_per_field"]),
        "nucleated_rbc": _nrbc(n["nrbc"], n["wbc"], r["nucleated_rbc"]),
        "hypersegmented_neutrophils": _hyperseg(get("hypersegmented_neutrophil", 0), n["neut"],
                                                r["hypersegmented_neutrophils"]),
        "megaloblasts": _megaloblasts(get("megaloblast", 0), n["ery"], r["megaloblasts"]),
        "anisocytosis": _anisocytosis(cell_list, r["anisocytosis"]),
        "field_agreement": agreement["report"],
        "scale": dict(scale) if scale is not None else {"um_per_px": um_per_px},
        "stain": stain,
        "warnings": warnings,
        "rules_file": "morph/rules/findings.yaml",
    }


def _tally(c: Mapping[str, int]) -> dict[str, int]:
    """The denominators: assessed red cells, white cells, neutrophils, precursors, left out."""
    get = c.get
    return {
        "rbc": sum(get(lab, 0) for lab in RBC_LABELS),
        "wbc": sum(get(lab, 0) for lab in WHITE_CELL_LABELS),
        "neut": sum(get(lab, 0) for lab in NEUTROPHIL_LABELS),
        "nrbc": get("nucleated_rbc", 0),
        "ery": sum(get(lab, 0) for lab in MARROW_LABELS),
        "unid": get(UNIDENTIFIED, 0),
        "uncl": get(UNCLASSIFIED, 0),
    }


def _evidence(n: Mapping[str, int], ev: Mapping[str, Any],
              cells: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Are there enough cells to read the smear at all, and if not, how many more fields."""
    n_rbc, n_ery = n["rbc"], n["ery"]
    min_rbc, min_ery = int(ev["min_assessed_rbc"]), int(ev["min_erythroid_precursors"])
    enough_rbc = n_rbc >= min_rbc
    enough_marrow = n_ery >= min_ery
    enough = enough_rbc or enough_marrow
    fields = _fields_of(cells)
    per_field = n_rbc / len(fields) if fields else None
    more = None
    if not enough_rbc and per_field:
        more = math.ceil((min_rbc - n_rbc) / per_field)
    if enough:
        msg = f"{n_rbc} red cells assessed (minimum {min_rbc})" if enough_rbc else (
            f"{n_ery} marrow erythroid precursors assessed (minimum {min_ery})")
    elif n_rbc == 0 and n["uncl"] > 0:
        msg = ("not enough evidence: no cell was classified (localization only); "
               "load a classifier model")
    else:
        msg = (f"not enough evidence: only {n_rbc} red cells assessed (minimum {min_rbc}); "
               "analyse more fields")
        if more is not None:
            msg += (f" (about {more} more field{'s' if more > 1 else ''} at this case's "
                    f"{per_field:.0f} red cells per field)")
    return {
        "enough": enough,
        "enough_rbc": enough_rbc,
        "enough_marrow": enough_marrow,
        "assessed_rbc": n_rbc,
        "min_assessed_rbc": min_rbc,
        "erythroid_precursors": n_ery,
        "min_erythroid_precursors": min_ery,
        "fields": len(fields) if cells is not None and fields else None,
        "rbc_per_field": None if per_field is None else round(per_field, 1),
        "more_fields_needed": more,
        "message": msg,
    }


def _left_out_warning(n: Mapping[str, int], ev: Mapping[str, Any]) -> list[str]:
    left_out = n["unid"] + n["uncl"]
    total = left_out + n["rbc"] + n["wbc"] + n["nrbc"] + n["ery"]
    if left_out and left_out / total > float(ev["max_unidentified_fraction"]):
        return [f"{left_out} cells were unidentified or unclassified and are left out of all fractions; "
                "findings may be biased"]
    return []


def _rbc_morphology(c: Mapping[str, int], n_rbc: int, grading: Mapping[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each red-cell label's fraction and ICSH grade, and the highest grade seen."""
    out: dict[str, Any] = {}
    max_grade, max_lab = "none" if n_rbc else "not_assessed", None
    for lab in RBC_LABELS:
        k = c.get(lab, 0)
        entry = _fraction(k, n_rbc)
        spec = grading.get(lab)
        if spec is not None:
            entry["grade"] = grade_of(entry["percent"], k, spec["grades"])
            entry["grade_source"] = spec.get("source")
            gr = grade_rank(entry["grade"])
            mr = grade_rank(max_grade)
            if gr is not None and mr is not None and gr > mr:
                max_grade, max_lab = entry["grade"], lab
        out[lab] = entry
    return out, {"grade": max_grade, "morphology": max_lab}


def _abnormal_rbc(c: Mapping[str, int], n_rbc: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    labels = [lab for lab in RBC_LABELS if lab not in spec["not_counted"]]
    return {**_fraction(sum(c.get(lab, 0) for lab in labels), n_rbc), "labels": labels,
            "source": spec.get("source")}


def _graded_group(c: Mapping[str, int], n_rbc: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Several labels together (poikilocytes; signs of red-cell destruction)."""
    k = sum(c.get(lab, 0) for lab in spec["labels"])
    out = _fraction(k, n_rbc)
    if "grades" in spec:
        out["grade"] = grade_of(out["percent"], k, spec["grades"])
    out["labels"] = list(spec["labels"])
    return out


def _shape_findings(c: Mapping[str, int], cells: list[dict[str, Any]] | None, n_rbc: int,
                    r: Mapping[str, Any]) -> dict[str, Any]:
    """Findings that need each cell's size and shape: they separate the mimics (macro-ovalocytes
    against normal-sized elliptocytes, pencil cells against teardrops)."""
    return {
        "macro_ovalocytes": _macro_ovalocytes(cells, r["macro_ovalocytes"]),
        "macrocyte_shape": _macrocyte_shape(cells, r["macrocyte_shape"], r["macro_ovalocytes"]),
        "elliptocytes": _elliptocytes(c, cells, n_rbc, r),
        "pencil_cells": _pencil_cells(cells, r["pencil_cells"]),
        "teardrops": _teardrops(c, cells, n_rbc, r),
        "basophilic_stippling": {
            "status": "not_assessed", "source": r.get("basophilic_stippling", {}).get("source"),
            "reason": "the classifier has no label for basophilic stippling; look for it on the film",
        },
    }


def _sized_rbc(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in cells if c["label"] in RBC_LABELS and c["diameter_um"] is not None]


def _not_sized(cells: list[dict[str, Any]] | None, base: Mapping[str, Any]) -> dict[str, Any] | None:
    """The not_assessed answer when no red cell has a size; ``None`` when sizes are there."""
    if cells is None:
        return {**base, "count": None, "of": None, "percent": None, "ci95_percent": None,
                "grade": "not_assessed", "reason": "cell sizes not given"}
    if _sized_rbc(cells):
        return None
    rbc = [c for c in cells if c["label"] in RBC_LABELS]
    why = "no classified red cells" if not rbc else "no red cell has a measured diameter"
    return {**base, "count": None, "of": len(rbc), "percent": None, "ci95_percent": None,
            "grade": "not_assessed", "reason": why}


def _is_pencil(cell: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    return (cell["label"] in spec["labels"] and cell["diameter_um"] is not None
            and cell["diameter_um"] < float(spec["max_diameter_um"])
            and (cell["eccentricity"] or 0.0) >= float(spec["min_eccentricity"]))


def _graded_fraction(k: int, n: int, grades: Mapping[str, float], base: Mapping[str, Any]
                     ) -> dict[str, Any]:
    out = {**base, **_fraction(k, n)}
    out["grade"] = grade_of(out["percent"], k, grades)
    return out


def _macro_ovalocytes(cells: list[dict[str, Any]] | None, spec: Mapping[str, Any]) -> dict[str, Any]:
    base = {
        "definition": (
            f"cells labelled {'/'.join(spec['labels'])} with diameter >= {spec['min_diameter_um']} um "
            f"and eccentricity >= {spec['min_eccentricity']}"
        ),
        "source": spec.get("source"),
    }
    missing = _not_sized(cells, base)
    if missing is not None:
        return missing
    sized = _sized_rbc(cells or [])
    k = sum(
        1 for c in sized
        if c["label"] in spec["labels"]
        and c["diameter_um"] >= float(spec["min_diameter_um"])
        and (c["eccentricity"] or 0.0) >= float(spec["min_eccentricity"])
    )
    return _graded_fraction(k, len(sized), spec["grades"], base)


def _macrocyte_shape(cells: list[dict[str, Any]] | None, spec: Mapping[str, Any],
                     macro: Mapping[str, Any]) -> dict[str, Any]:
    """How many of the macrocytes are oval (megaloblastic) and how many round (other causes)."""
    min_d, min_e = float(macro["min_diameter_um"]), float(macro["min_eccentricity"])
    out: dict[str, Any] = {
        "definition": (f"cells labelled {'/'.join(macro['labels'])} with diameter >= {min_d:g} um; "
                       f"oval from eccentricity {min_e:g}"),
        "oval": None, "round": None, "of": None, "oval_percent": None, "pattern": "not_assessed",
        "source": spec.get("source"),
    }
    sized = _sized_rbc(cells) if cells is not None else []
    if not sized:
        return {**out, "reason": "cell sizes not given" if cells is None else "no red cell has a measured diameter"}
    big = [c for c in sized if c["label"] in macro["labels"] and c["diameter_um"] >= min_d]
    oval = sum(1 for c in big if (c["eccentricity"] or 0.0) >= min_e)
    out.update(oval=oval, round=len(big) - oval, of=len(big))
    if len(big) < int(spec["min_macrocytes"]):
        return {**out, "reason": f"fewer than {spec['min_macrocytes']} macrocytes"}
    share = 100.0 * oval / len(big)
    out.update(oval_percent=round(share, 1),
               pattern="mostly round" if share < float(spec["mostly_round_below"]) else "mostly oval")
    return out


def _elliptocytes(c: Mapping[str, int], cells: list[dict[str, Any]] | None, n_rbc: int,
                  r: Mapping[str, Any]) -> dict[str, Any]:
    spec, pencil = r["elliptocytes"], r["pencil_cells"]
    max_d = float(r["macro_ovalocytes"]["min_diameter_um"])
    base = {"definition": (f"cells labelled {'/'.join(spec['labels'])} under {max_d:g} um "
                           "(normal size), pencil cells left out"), "source": spec.get("source")}
    if cells is None or not _sized_rbc(cells):
        labels = spec["labels_without_sizes"]
        out = _graded_fraction(sum(c.get(lab, 0) for lab in labels), n_rbc, spec["grades"], base)
        out["definition"] = f"cells labelled {'/'.join(labels)} (sizes not given: ovalocytes left out)"
        return out
    sized = _sized_rbc(cells)
    k = sum(1 for x in sized if x["label"] in spec["labels"] and x["diameter_um"] < max_d
            and not _is_pencil(x, pencil))
    return _graded_fraction(k, len(sized), spec["grades"], base)


def _pencil_cells(cells: list[dict[str, Any]] | None, spec: Mapping[str, Any]) -> dict[str, Any]:
    base = {"definition": (
        f"cells labelled {'/'.join(spec['labels'])} with eccentricity >= {spec['min_eccentricity']} "
        f"(long axis about 3x the short one) and diameter under {spec['max_diameter_um']} um; "
        "derived from cell geometry (the classifier has no pencil-cell label)"),
        "source": spec.get("source")}
    missing = _not_sized(cells, base)
    if missing is not None:
        return missing
    sized = _sized_rbc(cells or [])
    k = sum(1 for x in sized if _is_pencil(x, spec))
    return _graded_fraction(k, len(sized), spec["grades"], base)


def _teardrops(c: Mapping[str, int], cells: list[dict[str, Any]] | None, n_rbc: int,
               r: Mapping[str, Any]) -> dict[str, Any]:
    spec, pencil = r["teardrops"], r["pencil_cells"]
    pencil_shaped = 0 if cells is None else sum(
        1 for x in cells if x["label"] == "teardrop" and _is_pencil(x, pencil))
    k = max(c.get("teardrop", 0) - pencil_shaped, 0)
    base = {"definition": "cells labelled teardrop that are not pencil-shaped"
            if cells is not None else "cells labelled teardrop (sizes not given: pencil cells not checked)",
            "pencil_shaped_left_out": pencil_shaped, "source": spec.get("source")}
    return _graded_fraction(k, n_rbc, spec["grades"], base)


# -- fields that disagree ----------------------------------------------------------------------
def _fields_of(cells: list[dict[str, Any]] | None) -> list[Any]:
    if not cells:
        return []
    seen: dict[Any, None] = {}
    for x in cells:
        if x["field"] is not None:
            seen.setdefault(x["field"], None)
    return list(seen)


def _field_agreement(cells: list[dict[str, Any]] | None, spec: Mapping[str, Any] | None
                     ) -> dict[str, Any]:
    """Set aside a field that is mostly artefact; name fields that disagree on a morphology."""
    out: dict[str, Any] = {"set_aside": [], "warnings": [], "report": {
        "assessed": False, "fields": 0, "set_aside": [], "disagreements": [],
        "source": None if spec is None else spec.get("source")}}
    fields = _fields_of(cells)
    if spec is None or cells is None or len(fields) < int(spec["min_fields"]):
        return out
    per_field = {f: [x for x in cells if x["field"] == f and x["kind"] == "rbc"] for f in fields}
    artefact = set(spec["artefact_labels"])
    set_aside = []
    for f, fcells in per_field.items():
        rest = [x for g, xs in per_field.items() if g != f for x in xs]
        if len(fcells) < int(spec["min_cells_per_field"]) or not rest:
            continue
        share = sum(x["label"] in artefact for x in fcells) / len(fcells)
        rest_share = sum(x["label"] in artefact for x in rest) / len(rest)
        if share > float(spec["max_artefact_share"]) and share >= float(spec["min_ratio"]) * rest_share:
            set_aside.append({"field": f, "artefact_percent": round(100 * share, 1),
                              "other_fields_percent": round(100 * rest_share, 1)})
    if len(set_aside) >= len(fields):
        set_aside = []  # every field looks the same: nothing to weigh against
    out["set_aside"] = [s["field"] for s in set_aside]
    kept = {f: xs for f, xs in per_field.items() if f not in out["set_aside"]}
    disagreements = _disagreements(kept, float(spec["disagree_z"]), int(spec["min_cells_per_field"]))
    out["report"].update(assessed=True, fields=len(fields), set_aside=set_aside,
                         disagreements=disagreements)
    for s in set_aside:
        out["warnings"].append(
            f"field {s['field']} set aside: {s['artefact_percent']}% of its red-cell-sized cells are "
            f"unidentified, uncategorised or crenated (other fields {s['other_fields_percent']}%)")
    for d in disagreements:
        out["warnings"].append(
            f"fields disagree on {d['label']}: field {d['field']} {d['field_percent']}% against "
            f"{d['other_fields_percent']}% in the other fields (kept; review that field)")
    return out


def _disagreements(per_field: Mapping[Any, list[dict[str, Any]]], z_min: float, min_cells: int
                   ) -> list[dict[str, Any]]:
    """Two-proportion z test of each field against the others, per abnormal red-cell label."""
    out = []
    labels = sorted({x["label"] for xs in per_field.values() for x in xs} & set(RBC_LABELS) - {"normal"})
    for f, xs in per_field.items():
        n1 = sum(x["label"] in RBC_LABELS for x in xs)
        rest = [x for g, ys in per_field.items() if g != f for x in ys]
        n2 = sum(x["label"] in RBC_LABELS for x in rest)
        if n1 < min_cells or n2 < min_cells:
            continue
        for lab in labels:
            k1 = sum(x["label"] == lab for x in xs)
            k2 = sum(x["label"] == lab for x in rest)
            p = (k1 + k2) / (n1 + n2)
            se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2)) if 0 < p < 1 else 0.0
            if se > 0 and abs(k1 / n1 - k2 / n2) / se > z_min:
                out.append({"field": f, "label": lab, "field_percent": round(100 * k1 / n1, 1),
                            "other_fields_percent": round(100 * k2 / n2, 1)})
    return out


def _without_fields(c: Mapping[str, int], cells: list[dict[str, Any]] | None, drop: set[Any]
                    ) -> tuple[dict[str, int], list[dict[str, Any]] | None]:
    """Counts and cells with the set-aside fields' cells taken out."""
    if cells is None:
        return dict(c), None
    out = dict(c)
    for x in cells:
        if x["field"] in drop and out.get(x["label"], 0) > 0:
            out[x["label"]] -= 1
    return out, [x for x in cells if x["field"] not in drop]


def cells_to_decide(k: int, n: int, threshold: float, limit: int = 100_000) -> int | None:
    """How many red cells in all (at the same observed share) would put the 95% Wilson interval
    wholly on one side of ``threshold`` (a fraction); ``None`` when no count under ``limit``
    would (the share sits on the threshold) or nothing was counted."""
    if n <= 0:
        return None
    p = k / n
    m = n
    while m <= limit:
        if _three_state(round(p * m), m, threshold) in ("absent", "present"):
            lo = max(n, m // 2)  # refine between the last two tries
            while lo < m:
                mid = (lo + m) // 2
                if _three_state(round(p * mid), mid, threshold) in ("absent", "present"):
                    m = mid
                else:
                    lo = mid + 1
            return m
        m *= 2
    return None


def _reticulocytes(k: int, n: int, stain: str | None, spec: Mapping[str, Any],
                   rbc_per_field: float | None = None) -> dict[str, Any]:
    thr = float(spec["threshold_percent"])
    out: dict[str, Any] = {**_fraction(k, n), "threshold_percent": thr, "source": spec.get("source")}
    if stain != "nmb":
        why = ("a Wright stain does not show the reticulum" if stain == "wright"
               else "the stain was not given as nmb (new methylene blue)")
        out.update(status="not_assessed", count_open=False,
                   message=f"reticulocytes not assessed: {why}; use a new methylene blue smear "
                           "or the laboratory reticulocyte count")
        return out
    status = _three_state(k, n, thr / 100.0)
    out["status"] = status
    out["count_open"] = status in ("indeterminate", "not_assessed") and n < int(spec.get("full_count", 1000))
    out["message"] = {
        "absent": f"reticulocytes absent: 95% upper bound under {thr:g}%",
        "present": f"reticulocytes present: 95% lower bound at or above {thr:g}%",
        "indeterminate": "indeterminate: count more cells",
        "not_assessed": "reticulocytes not assessed: no red cells counted",
    }[status]
    if status == "indeterminate":
        # at least 1000 red cells is the usual manual count (CLSI H44-A2); say how many this share needs
        total = cells_to_decide(k, n, thr / 100.0)
        out["red_cells_to_decide"] = total
        out["more_fields_to_decide"] = (math.ceil((total - n) / rbc_per_field)
                                        if total is not None and rbc_per_field else None)
    return out


def _nrbc(k: int, n_wbc: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    per100 = round(100.0 * k / n_wbc, 2) if n_wbc else None
    if k > 0:
        status = "present"
    elif n_wbc >= int(spec["min_white_cells"]):
        status = "absent"
    elif n_wbc == 0:
        status = "not_assessed"
    else:
        status = "indeterminate"
    return {"count": k, "white_cells": n_wbc, "per_100_wbc": per100, "status": status}


def _hyperseg(k: int, n_neut: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    thr = float(spec["percent_threshold"])
    out = {**_fraction(k, n_neut), "label_min_lobes": spec["label_min_lobes"],
           "source": spec.get("source")}
    if n_neut == 0:
        status = "not_assessed"
    elif int(spec["label_min_lobes"]) >= 6:
        # "any with six or more lobes": present on min_count detections; their share only
        # decides between absent and indeterminate (one cell of three must not read as present)
        state = _three_state(k, n_neut, thr / 100.0)
        status = "present" if k >= int(spec["min_count"]) else (
            "absent" if state == "absent" else "indeterminate")
    else:
        status = _three_state(k, n_neut, thr / 100.0)
    out["status"] = status
    out["interpretation"] = (
        f"the hypersegmented_neutrophil label means >= {spec['label_min_lobes']} lobes; present when "
        f"at least {spec['min_count']} are seen, absent when fewer are seen and the 95% upper bound of "
        f"their share of neutrophils is under {thr:g}%"
    )
    return out


def _megaloblasts(k: int, n: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    thr = float(spec["threshold_percent"])
    return {**_fraction(k, n), "threshold_percent": thr, "status": _three_state(k, n, thr / 100.0),
            "source": spec.get("source")}


def _anisocytosis(cells: list[dict[str, Any]] | None, spec: Mapping[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {"measure": "coefficient of variation of red-cell diameters",
                            "source": spec.get("source")}
    if cells is None:
        return {**base, "n": 0, "cv_percent": None, "grade": "not_assessed",
                "reason": "cell sizes not given"}
    d = [c["diameter_um"] for c in cells
         if c["diameter_um"] is not None and (c["kind"] == "rbc" or c["label"] in RBC_LABELS)]
    n = len(d)
    if n < int(spec["min_cells"]):
        return {**base, "n": n, "cv_percent": None, "grade": "not_assessed",
                "reason": f"fewer than {spec['min_cells']} sized red cells"}
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    cv = 100.0 * math.sqrt(var) / mean
    return {**base, "n": n, "mean_diameter_um": round(mean, 2), "cv_percent": round(cv, 2),
            "grade": grade_of(cv, n, spec["grades"])}


# -- what was abnormal --------------------------------------------------------------------------
_SHAPE_NAMES = {"macro_ovalocytes": "macro-ovalocytes", "elliptocytes": "elliptocytes of normal size",
                "pencil_cells": "pencil cells"}


def abnormal_findings(findings: Mapping[str, Any]) -> list[str]:
    """Plain-language list of the abnormal findings (graded 1+ or more, present, absent
    reticulocytes, anisocytosis 2+ or more); empty for a normal smear."""
    out = []
    for lab, e in findings["rbc_morphology"].items():
        if grade_rank(e.get("grade")) and e["percent"] is not None:
            out.append(f"{lab.replace('_', ' ')} {e['grade']} ({e['percent']:g}%)")
    for key, name in _SHAPE_NAMES.items():
        e = findings.get(key) or {}
        if grade_rank(e.get("grade")) and e.get("percent") is not None:
            out.append(f"{name} {e['grade']} ({e['percent']:g}%)")
    for key in ("nucleated_rbc", "hypersegmented_neutrophils", "megaloblasts"):
        if findings[key]["status"] == "present":
            out.append(f"{key.replace('_', ' ')} present")
    if findings["reticulocytes"]["status"] == "absent":
        out.append("reticulocytes absent")
    if (grade_rank(findings["anisocytosis"]["grade"]) or 0) >= 2:
        out.append(f"anisocytosis {findings['anisocytosis']['grade']}")
    return out


# -- variables for the rules engine ------------------------------------------------------------
def finding_variables(findings: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten findings into the dotted names the rules file uses (``None`` = not known)."""
    v: dict[str, Any] = {}
    for lab, e in findings["rbc_morphology"].items():
        v[f"rbc.{lab}.percent"] = e["percent"]
        if "grade" in e:
            v[f"rbc.{lab}.grade"] = e["grade"]
        lo_hi = e.get("ci95_percent")
        v[f"rbc.{lab}.ci95_low"] = lo_hi[0] if lo_hi else None
        v[f"rbc.{lab}.ci95_high"] = lo_hi[1] if lo_hi else None
    for key in ("elliptocytes", "pencil_cells", "teardrops"):
        e = findings[key]
        v[f"{key}.percent"] = e["percent"]
        v[f"{key}.grade"] = e["grade"]
        v[f"{key}.ci95_low"] = e["ci95_percent"][0] if e["ci95_percent"] else None
        v[f"{key}.ci95_high"] = e["ci95_percent"][1] if e["ci95_percent"] else None
    v["basophilic_stippling.status"] = findings["basophilic_stippling"]["status"]
    v["rbc.max_grade"] = findings["rbc_max_grade"]["grade"]
    v["poikilocytes.percent"] = findings["poikilocytes"]["percent"]
    v["poikilocytes.grade"] = findings["poikilocytes"]["grade"]
    v["red_cell_destruction.percent"] = findings["red_cell_destruction"]["percent"]
    ab = findings["abnormal_rbc"]["ci95_percent"]
    v["abnormal_rbc.ci95_low"] = ab[0] if ab else None
    v["abnormal_rbc.percent"] = findings["abnormal_rbc"]["percent"]
    v["abnormal_rbc.ci95_high"] = ab[1] if ab else None
    mo = findings["macro_ovalocytes"]
    v["macro_ovalocytes.percent"] = mo["percent"]
    v["macro_ovalocytes.grade"] = mo["grade"]
    v["macro_ovalocytes.ci95_low"] = mo["ci95_percent"][0] if mo["ci95_percent"] else None
    v["macro_ovalocytes.ci95_high"] = mo["ci95_percent"][1] if mo["ci95_percent"] else None
    v["macrocyte_shape.oval_percent"] = findings["macrocyte_shape"]["oval_percent"]
    ret = findings["reticulocytes"]
    assessed = ret["status"] != "not_assessed"
    v["reticulocytes.status"] = ret["status"]
    v["reticulocytes.percent"] = ret["percent"] if assessed else None
    v["reticulocytes.ci95_high"] = ret["ci95_percent"][1] if assessed and ret["ci95_percent"] else None
    v["reticulocytes.count_open"] = bool(ret.get("count_open", False))
    nr = findings["nucleated_rbc"]
    v["nucleated_rbc.status"] = nr["status"]
    v["nucleated_rbc.per_100_wbc"] = nr["per_100_wbc"]
    hs = findings["hypersegmented_neutrophils"]
    v["hypersegmented_neutrophils.status"] = hs["status"]
    v["hypersegmented_neutrophils.percent"] = hs["percent"]
    mg = findings["megaloblasts"]
    v["megaloblasts.status"] = mg["status"]
    v["megaloblasts.percent"] = mg["percent"]
    an = findings["anisocytosis"]
    v["anisocytosis.cv_percent"] = an["cv_percent"]
    v["anisocytosis.grade"] = an["grade"]
    ev = findings["evidence"]
    v["evidence.enough"] = ev["enough"]
    v["evidence.enough_rbc"] = ev["enough_rbc"]
    v["evidence.assessed_rbc"] = ev["assessed_rbc"]
    return v
