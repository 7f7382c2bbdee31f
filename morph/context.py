"""A case's context: its stain, its pixel scale and the optional clinical values.

The one place where the CLI, the service and the batch engine learn which stains exist
(:data:`STAINS`), which scales are plausible (:data:`UM_PER_PX_MIN` - :data:`UM_PER_PX_MAX`,
checked by :func:`check_um_per_px`) and how a clinical context is parsed from JSON text
(:func:`parse_context_json`, :func:`read_context_file`) or from the text cells of a CSV
row (:func:`context_from_text`).

Every field is optional and strictly validated; units are part of the field names so a
value can never be read in the wrong unit. :func:`validate_context` rejects an unknown
key, a wrong type (``"abc"`` for a number, ``1`` for a yes/no field) or an impossible
value (a negative haemoglobin, donor chimerism over 100 %) with a
:class:`~morph.errors.MorphError` ``bad_context`` whose ``path`` is the field name.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import MorphError
from .json_bounds import find_json_hazard

#: The stains a smear may carry: Wright/Giemsa, or new methylene blue (reticulocytes).
STAINS: tuple[str, ...] = ("wright", "nmb")
#: The plausible pixel scale, micrometres per pixel (inclusive): from oil immersion at
#: high resolution to a low-power scan. The default scale lives with the segment config.
UM_PER_PX_MIN = 0.01
UM_PER_PX_MAX = 5.0


def check_stain(stain: Any, *, optional: bool = False) -> Any:
    """Return ``stain`` when it is one of :data:`STAINS` (or ``None`` when ``optional``)."""
    if (stain is None and optional) or (isinstance(stain, str) and stain in STAINS):
        return stain
    raise MorphError("bad_request", f"unknown stain {_short(stain)}; use one of {', '.join(STAINS)}", path="stain")


def check_um_per_px(value: Any) -> float | None:
    """The one scale rule: ``None`` (the default scale) or a number in the plausible range."""
    if value is None:
        return None
    v = _finite_number(value)
    if v is None or not (UM_PER_PX_MIN <= v <= UM_PER_PX_MAX):
        raise MorphError(
            "bad_request",
            f"um_per_px={_short(value)} is outside the plausible range {UM_PER_PX_MIN:g}-{UM_PER_PX_MAX:g} "
            "micrometres per pixel",
            path="um_per_px",
        )
    return v


def _finite_number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is not a number (``True`` is not one)
    or is infinite, NaN or an integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        v = float(value)
    except OverflowError:  # an int like 1 followed by 400 zeros
        return None
    return v if math.isfinite(v) else None


def _num(unit: str, lo: float, hi: float, description: str, *, lo_exclusive: bool = False) -> dict[str, Any]:
    return {"type": "number", "unit": unit, "min": lo, "max": hi, "min_exclusive": lo_exclusive,
            "description": description}


def _bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "unit": None, "description": description}


def _enum(values: tuple[str, ...], description: str) -> dict[str, Any]:
    return {"type": "enum", "unit": None, "values": list(values), "description": description}


#: Field name -> spec: ``type`` ("number" | "boolean" | "enum"), ``unit``, the allowed range
#: (``min``/``max``, inclusive unless ``min_exclusive``) or ``values``, and a description.
#: Ranges reject what is physically impossible, not what is merely abnormal.
CONTEXT_FIELDS: dict[str, dict[str, Any]] = {
    "hb_g_dl": _num("g/dL", 0, 30, "haemoglobin", lo_exclusive=True),
    "mcv_fl": _num("fL", 0, 200, "mean corpuscular volume", lo_exclusive=True),
    "rbc_10e12_l": _num("10^12/L", 0, 15, "red-cell count", lo_exclusive=True),
    "rdw_percent": _num("%", 0, 100, "red-cell distribution width (CV)"),
    "ldh_u_l": _num("U/L", 0, 100_000, "lactate dehydrogenase"),
    "reticulocyte_percent": _num("%", 0, 100, "reticulocytes, percent of red cells (laboratory count)"),
    "wbc_10e9_l": _num("10^9/L", 0, 1_000, "white-cell count"),
    "platelets_10e9_l": _num("10^9/L", 0, 5_000, "platelet count"),
    "b12_pg_ml": _num("pg/mL", 0, 100_000, "serum vitamin B12"),
    "folate_ng_ml": _num("ng/mL", 0, 1_000, "serum folate"),
    "ferritin_ng_ml": _num("ng/mL", 0, 100_000, "serum ferritin"),
    "hbf_percent": _num("%", 0, 100, "fetal haemoglobin, percent of total"),
    "hba2_percent": _num("%", 0, 100, "haemoglobin A2, percent of total"),
    "age_years": _num("years", 0, 130, "age"),
    "splenomegaly": _bool("enlarged spleen on examination or imaging"),
    "early_satiety": _bool("early satiety (feeling full after little food)"),
    "gastric_surgery": _bool("previous gastric surgery (gastrectomy, bariatric surgery)"),
    "sickle_cell_disease": _bool("known sickle-cell disease"),
    "chronic_hemolysis": _bool("known chronic haemolytic condition"),
    "transfusion_dependent": _bool("needs regular red-cell transfusions"),
    "post_hsct": _bool("after allogeneic haematopoietic stem-cell transplant"),
    "post_car_t": _bool("after CAR-T cell therapy"),
    "donor_chimerism_percent": _num("%", 0, 100, "donor chimerism after transplant"),
    "mrd": _enum(("positive", "negative"), "minimal residual disease"),
    "myelotoxic_drugs": _bool("currently on myelotoxic or immunosuppressive drugs"),
    "marrow_cellularity": _enum(("hypo", "normo", "hyper"), "bone-marrow cellularity for age"),
    "marrow_fibrosis": _bool("marrow fibrosis (dry tap, reticulin/collagen fibrosis on trephine)"),
}


@dataclass(frozen=True)
class ClinicalContext:
    """Validated clinical context; ``None`` means not given."""

    hb_g_dl: float | None = None
    mcv_fl: float | None = None
    rbc_10e12_l: float | None = None
    rdw_percent: float | None = None
    ldh_u_l: float | None = None
    reticulocyte_percent: float | None = None
    wbc_10e9_l: float | None = None
    platelets_10e9_l: float | None = None
    b12_pg_ml: float | None = None
    folate_ng_ml: float | None = None
    ferritin_ng_ml: float | None = None
    hbf_percent: float | None = None
    hba2_percent: float | None = None
    age_years: float | None = None
    splenomegaly: bool | None = None
    early_satiety: bool | None = None
    gastric_surgery: bool | None = None
    sickle_cell_disease: bool | None = None
    chronic_hemolysis: bool | None = None
    transfusion_dependent: bool | None = None
    post_hsct: bool | None = None
    post_car_t: bool | None = None
    donor_chimerism_percent: float | None = None
    mrd: str | None = None
    myelotoxic_drugs: bool | None = None
    marrow_cellularity: str | None = None
    marrow_fibrosis: bool | None = None

    @property
    def mentzer_index(self) -> float | None:
        """MCV (fL) / RBC count (10^12/L): > 13 favours iron deficiency, < 13 thalassaemia."""
        if self.mcv_fl is None or self.rbc_10e12_l is None:
            return None
        return self.mcv_fl / self.rbc_10e12_l

    def corrected_reticulocyte_percent(self, percent: float | None) -> float | None:
        """A reticulocyte percentage corrected for the anaemia (to a haematocrit of 45%):
        percent x Hct / 45, the haematocrit taken as 3 x Hb (g/dL), as no haematocrit is given.
        In an anaemic patient a corrected count under 1% means the marrow is not answering."""
        if percent is None or self.hb_g_dl is None:
            return None
        return percent * (3.0 * self.hb_g_dl) / 45.0

    def to_dict(self) -> dict[str, Any]:
        """The fields that were given (JSON-ready)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def derived(self) -> dict[str, Any]:
        """Values computed from the context (Mentzer index)."""
        m = self.mentzer_index
        return {"mentzer_index": None if m is None else round(m, 2)}


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message never echoes a huge input."""
    # repr() of an int over 4,300 digits raises; a huge one is named, not printed
    text = "a huge integer" if isinstance(value, int) and value.bit_length() > 128 else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _check(name: str, value: Any) -> Any:
    spec = CONTEXT_FIELDS[name]
    kind = spec["type"]
    if kind == "boolean":
        if not isinstance(value, bool):
            raise MorphError("bad_context", f"{name} must be true or false, got {_short(value)}", path=name)
        return value
    if kind == "enum":
        if not isinstance(value, str) or value not in spec["values"]:
            allowed = " or ".join(repr(v) for v in spec["values"])
            raise MorphError("bad_context", f"{name} must be {allowed}, got {_short(value)}", path=name)
        return value
    # number: bool is an int subclass in Python; "true" is not a haemoglobin
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MorphError(
            "bad_context", f"{name} must be a number in {spec['unit']}, got {_short(value)}", path=name
        )
    v = _finite_number(value)
    if v is None:
        raise MorphError("bad_context", f"{name} must be a finite number, got {_short(value)}", path=name)
    lo, hi = spec["min"], spec["max"]
    too_low = v <= lo if spec["min_exclusive"] else v < lo
    if too_low or v > hi:
        lo_s = f"> {lo:g}" if spec["min_exclusive"] else f">= {lo:g}"
        raise MorphError(
            "bad_context",
            f"{name}={_short(value)} is impossible; it must be {lo_s} and <= {hi:g} {spec['unit']}",
            path=name,
        )
    return v


def validate_context(raw: Mapping[str, Any] | ClinicalContext | None) -> ClinicalContext:
    """Check a raw mapping (parsed JSON) and return a :class:`ClinicalContext`.

    ``None`` and ``{}`` give an empty context. A JSON ``null`` value means "not given".
    Raises :class:`MorphError` ``bad_context`` naming the offending field.
    """
    if raw is None:
        return ClinicalContext()
    if isinstance(raw, ClinicalContext):
        return raw
    if not isinstance(raw, Mapping):
        raise MorphError(
            "bad_context", f"the clinical context must be an object of fields, got {type(raw).__name__}"
        )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in CONTEXT_FIELDS:
            raise MorphError(
                "bad_context",
                f"unknown clinical-context field {_short(key)}; known fields: {', '.join(CONTEXT_FIELDS)}",
                path=str(key),
            )
        if value is None:
            continue
        values[key] = _check(key, value)
    return ClinicalContext(**values)


def parse_context_json(text: str | bytes | None, source: str = "context") -> dict[str, Any] | None:
    """Parse a clinical context from JSON text and validate it; ``None`` when blank.

    Returns the given fields as they were written (the report keeps the validated form).
    Raises ``bad_context``: with ``path=source`` when the text is not a JSON object, with
    the field name as ``path`` when a field is wrong.
    """
    if text is None or not text.strip():
        return None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MorphError("bad_context", "context is not valid JSON (not UTF-8 text)", path=source) from exc
    _check_bounds(text, source)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MorphError("bad_context", f"context is not valid JSON ({exc.msg})", path=source) from exc
    if not isinstance(value, dict):
        raise MorphError("bad_context", "context must be a JSON object", path=source)
    validate_context(value)
    return value


#: Nesting bound on context JSON, far above any real context (a flat object of short numbers)
#: and far below what costs time: 100,000 nested arrays would exhaust the parser's stack.
MAX_CONTEXT_DEPTH = 8


def _check_bounds(text: str, source: str) -> None:
    """Refuse hostile JSON before parsing it (:func:`morph.json_bounds.find_json_hazard`): deep
    nesting names ``source``; an over-long or non-finite number or a repeated key names its field
    (JSON would silently keep the last of two values)."""
    hazard = find_json_hazard(text, max_depth=MAX_CONTEXT_DEPTH)
    if hazard is None:
        return
    if hazard.kind == "too_deep":
        raise MorphError("bad_context", f"context is nested more than {MAX_CONTEXT_DEPTH} levels deep; it must "
                         "be a flat object of fields", path=source)
    raise MorphError("bad_context", f"{hazard.where}: {hazard.message}", path=hazard.where or source)


def read_context_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a clinical-context JSON file (``--context C.json``); errors name the file and
    (as ``detail.field``) the bad field."""
    from .io import read_text

    name = str(path)
    try:
        return parse_context_json(read_text(path), source=name) or {}
    except MorphError as exc:
        if exc.path == name:
            raise
        raise MorphError(exc.code, exc.message, path=name, detail={"field": exc.path}) from exc


_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def _from_text(name: str, text: str) -> Any:
    spec = CONTEXT_FIELDS.get(name)
    if spec is None:
        return text  # validate_context names the unknown field
    kind = spec.get("type")
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            raise MorphError("bad_context", f"{name} must be a number in {spec.get('unit')}, got {text!r}",
                             path=name) from None
    if kind == "boolean":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise MorphError("bad_context", f"{name} must be true or false (yes/no, 1/0), got {text!r}", path=name)
    return text


def context_from_text(row: Mapping[str, str]) -> dict[str, Any]:
    """A context written as text cells (a CSV row: ``"9.5"``, ``"yes"``; empty = not given)
    -> the validated fields."""
    raw = {k: _from_text(k, v) for k, v in row.items() if v != ""}
    return validate_context(raw).to_dict()
