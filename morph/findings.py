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
    for key in ("evidence", "grading", "poikilocytes", "red_cell_destruction", "macro_ovalocytes", "reticulocytes",
                "nucleated_rbc", "hypersegmented_neutrophils", "megaloblasts", "anisocytosis"):
        if not isinstance(data.get(key), dict):
            raise bad(f"missing section {key!r}")
    for lab, spec in data["grading"].items():
        if lab not in RBC_LABELS:
            raise bad(f"grading names {lab!r}, which is not a red-cell label")
        if spec is not None:
            _check_grades(spec.get("grades"), f"grading.{lab}", bad)
    for sect in ("poikilocytes", "macro_ovalocytes", "anisocytosis"):
        _check_grades(data[sect].get("grades"), sect, bad)
    for sect in ("poikilocytes", "red_cell_destruction", "macro_ovalocytes"):
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
        out.append({
            "label": c["label"],
            "kind": c.get("kind"),
            "diameter_um": d if d is not None and d > 0 else None,
            "eccentricity": e,
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
) -> dict[str, Any]:
    """Turn counts (and optional per-cell sizes) into the findings dict (JSON-ready).

    Args:
        counts: label -> number of cells (non-border cells of the whole case).
        um_per_px: the scale the sizes were measured at (reported; sizes come in ``cells``).
        cells: ``[{"label", "kind", "diameter_um", "eccentricity"}]`` for size findings
            (macro-ovalocytes, anisocytosis); ``None`` leaves those ``not_assessed``.
        stain: ``"nmb"`` (supravital: reticulocytes assessed); ``"wright"`` or ``None``
            (unknown) leave reticulocytes ``not_assessed`` - zero reticulocytes on a Wright
            smear says nothing about the reticulocyte count.
        rules: thresholds (default: ``morph/rules/findings.yaml``).
    """
    r = rules if rules is not None else load_findings_rules()
    c = validate_counts(counts)
    cell_list = _clean_cells(cells) if cells is not None else None
    get = c.get
    warnings: list[str] = []

    n_rbc = sum(get(lab, 0) for lab in RBC_LABELS)
    n_wbc = sum(get(lab, 0) for lab in WHITE_CELL_LABELS)
    n_neut = sum(get(lab, 0) for lab in NEUTROPHIL_LABELS)
    n_nrbc = get("nucleated_rbc", 0)
    n_ery = sum(get(lab, 0) for lab in MARROW_LABELS)
    n_unid, n_uncl = get(UNIDENTIFIED, 0), get(UNCLASSIFIED, 0)

    # evidence block
    ev = r["evidence"]
    min_rbc, min_ery = int(ev["min_assessed_rbc"]), int(ev["min_erythroid_precursors"])
    enough_rbc = n_rbc >= min_rbc
    enough_marrow = n_ery >= min_ery
    enough = enough_rbc or enough_marrow
    if enough:
        msg = f"{n_rbc} red cells assessed (minimum {min_rbc})" if enough_rbc else (
            f"{n_ery} marrow erythroid precursors assessed (minimum {min_ery})")
    elif n_rbc == 0 and n_uncl > 0:
        msg = ("not enough evidence: no cell was classified (localization only); "
               "load a classifier model")
    else:
        msg = (f"not enough evidence: only {n_rbc} red cells assessed (minimum {min_rbc}); "
               "analyse more fields")
    left_out = n_unid + n_uncl
    if left_out and left_out / (left_out + n_rbc + n_wbc + n_nrbc + n_ery) > float(
            ev["max_unidentified_fraction"]):
        warnings.append(
            f"{left_out} cells were unidentified or unclassified and are left out of all fractions; "
            "findings may be biased"
        )

    # red-cell morphology
    morph_out: dict[str, Any] = {}
    max_grade, max_lab = "none" if n_rbc else "not_assessed", None
    for lab in RBC_LABELS:
        k = get(lab, 0)
        entry = _fraction(k, n_rbc)
        spec = r["grading"].get(lab)
        if spec is not None:
            entry["grade"] = grade_of(entry["percent"], k, spec["grades"])
            entry["grade_source"] = spec.get("source")
            gr = grade_rank(entry["grade"])
            mr = grade_rank(max_grade)
            if gr is not None and mr is not None and gr > mr:
                max_grade, max_lab = entry["grade"], lab
        morph_out[lab] = entry

    poik_spec = r["poikilocytes"]
    k_poik = sum(get(lab, 0) for lab in poik_spec["labels"])
    poik = _fraction(k_poik, n_rbc)
    poik["grade"] = grade_of(poik["percent"], k_poik, poik_spec["grades"])
    poik["labels"] = list(poik_spec["labels"])
    destr_labels = r["red_cell_destruction"]["labels"]
    destr = _fraction(sum(get(lab, 0) for lab in destr_labels), n_rbc)
    destr["labels"] = list(destr_labels)

    return {
        "assessed_rbc": n_rbc,
        "counted": {
            "red_cells": n_rbc,
            "white_cells": n_wbc,
            "neutrophils": n_neut,
            "nucleated_rbc": n_nrbc,
            "erythroid_precursors": n_ery,
            "platelets": get(PLATELET, 0),
            "unidentified": n_unid,
            "unclassified": n_uncl,
        },
        "unidentified_policy": UNIDENTIFIED_POLICY,
        "evidence": {
            "enough": enough,
            "enough_rbc": enough_rbc,
            "enough_marrow": enough_marrow,
            "assessed_rbc": n_rbc,
            "min_assessed_rbc": min_rbc,
            "erythroid_precursors": n_ery,
            "min_erythroid_precursors": min_ery,
            "message": msg,
        },
        "rbc_morphology": morph_out,
        "rbc_max_grade": {"grade": max_grade, "morphology": max_lab},
        "poikilocytes": poik,
        "red_cell_destruction": destr,
        "macro_ovalocytes": _macro_ovalocytes(cell_list, r["macro_ovalocytes"]),
        "reticulocytes": _reticulocytes(get("reticulocyte", 0), n_rbc, stain, r["reticulocytes"]),
        "nucleated_rbc": _nrbc(n_nrbc, n_wbc, r["nucleated_rbc"]),
        "hypersegmented_neutrophils": _hyperseg(get("hypersegmented_neutrophil", 0), n_neut,
                                                r["hypersegmented_neutrophils"]),
        "megaloblasts": _megaloblasts(get("megaloblast", 0), n_ery, r["megaloblasts"]),
        "anisocytosis": _anisocytosis(cell_list, r["anisocytosis"]),
        "scale": {"um_per_px": um_per_px},
        "stain": stain,
        "warnings": warnings,
        "rules_file": "morph/rules/findings.yaml",
    }


def _macro_ovalocytes(cells: list[dict[str, Any]] | None, spec: Mapping[str, Any]) -> dict[str, Any]:
    base = {
        "definition": (
            f"cells labelled {'/'.join(spec['labels'])} with diameter >= {spec['min_diameter_um']} um "
            f"and eccentricity >= {spec['min_eccentricity']}"
        ),
        "source": spec.get("source"),
    }
    if cells is None:
        return {**base, "count": None, "of": None, "percent": None, "ci95_percent": None,
                "grade": "not_assessed", "reason": "cell sizes not given"}
    rbc = [c for c in cells if c["label"] in RBC_LABELS]
    sized = [c for c in rbc if c["diameter_um"] is not None]
    if not sized:
        why = "no classified red cells" if not rbc else "no red cell has a measured diameter"
        return {**base, "count": None, "of": len(rbc), "percent": None, "ci95_percent": None,
                "grade": "not_assessed", "reason": why}
    k = sum(
        1 for c in sized
        if c["label"] in spec["labels"]
        and c["diameter_um"] >= float(spec["min_diameter_um"])
        and (c["eccentricity"] or 0.0) >= float(spec["min_eccentricity"])
    )
    out = {**base, **_fraction(k, len(sized))}
    out["grade"] = grade_of(out["percent"], k, spec["grades"])
    return out


def _reticulocytes(k: int, n: int, stain: str | None, spec: Mapping[str, Any]) -> dict[str, Any]:
    thr = float(spec["threshold_percent"])
    out: dict[str, Any] = {**_fraction(k, n), "threshold_percent": thr, "source": spec.get("source")}
    if stain != "nmb":
        why = ("a Wright stain does not show the reticulum" if stain == "wright"
               else "the stain was not given as nmb (new methylene blue)")
        out.update(status="not_assessed",
                   message=f"reticulocytes not assessed: {why}; use a new methylene blue smear "
                           "or the laboratory reticulocyte count")
        return out
    status = _three_state(k, n, thr / 100.0)
    out["status"] = status
    out["message"] = {
        "absent": f"reticulocytes absent: 95% upper bound under {thr:g}%",
        "present": f"reticulocytes present: 95% lower bound at or above {thr:g}%",
        "indeterminate": "indeterminate: count more cells",
        "not_assessed": "reticulocytes not assessed: no red cells counted",
    }[status]
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
    elif int(spec["label_min_lobes"]) >= 6 and k >= int(spec["min_count"]):
        status = "present"  # "any with six or more lobes"
    else:
        status = _three_state(k, n_neut, thr / 100.0)
    out["status"] = status
    out["interpretation"] = (
        f"the hypersegmented_neutrophil label means >= {spec['label_min_lobes']} lobes; present when "
        f"at least {spec['min_count']} is seen, absent when none is seen and the 95% upper bound of "
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


# -- variables for the rules engine ------------------------------------------------------------
def finding_variables(findings: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten findings into the dotted names the rules file uses (``None`` = not known)."""
    v: dict[str, Any] = {}
    for lab, e in findings["rbc_morphology"].items():
        v[f"rbc.{lab}.percent"] = e["percent"]
        if "grade" in e:
            v[f"rbc.{lab}.grade"] = e["grade"]
    v["rbc.max_grade"] = findings["rbc_max_grade"]["grade"]
    v["poikilocytes.percent"] = findings["poikilocytes"]["percent"]
    v["poikilocytes.grade"] = findings["poikilocytes"]["grade"]
    v["red_cell_destruction.percent"] = findings["red_cell_destruction"]["percent"]
    mo = findings["macro_ovalocytes"]
    v["macro_ovalocytes.percent"] = mo["percent"]
    v["macro_ovalocytes.grade"] = mo["grade"]
    ret = findings["reticulocytes"]
    v["reticulocytes.status"] = ret["status"]
    v["reticulocytes.percent"] = ret["percent"] if ret["status"] != "not_assessed" else None
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
