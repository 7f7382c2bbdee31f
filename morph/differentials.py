"""Ranked, explained differentials from findings and clinical context.

The medicine lives in ``morph/rules/differentials.yaml`` (one entry per differential:
criteria, log-odds weights, references, next tests); this module is a small generic engine:

* every differential starts from its prior log-odds and adds the weight of each criterion
  whose input is known, so each criterion's contribution can be shown;
* a criterion whose input is missing (not given, not assessed, or "indeterminate: count more
  cells") adds nothing and is listed under ``missing`` - never counted as evidence against;
* ``score = 1 / (1 + exp(-log_odds))`` is a *relative ranking score*, not a calibrated
  probability: the weights are expert estimates, not fitted to outcome data;
* stepped criteria must have monotone weights (checked when the file is loaded), so e.g. more
  teardrop cells can never lower the score of primary myelofibrosis.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .context import CONTEXT_FIELDS, ClinicalContext, check_stain, check_um_per_px, validate_context
from .errors import MorphError
from .findings import (
    GRADES,
    RULES_DIR,
    abnormal_findings,
    compute_findings,
    finding_variables,
    grade_rank,
)

log = logging.getLogger(__name__)

DIFFERENTIALS_RULES_PATH = RULES_DIR / "differentials.yaml"

#: The stable differential ids (the API contract), in the knowledge base's order.
DIFFERENTIAL_IDS: tuple[str, ...] = (
    "primary_myelofibrosis",
    "b12_folate_deficiency",
    "myelodysplastic_syndrome",
    "parvovirus_b19_aplastic_crisis",
    "beta_thalassemia_major",
    "iron_deficiency_anemia",
    "post_transplant_graft_failure",
    "post_transplant_relapse",
    "drug_induced_marrow_suppression",
    "hereditary_spherocytosis",
    "hereditary_elliptocytosis",
    "thrombotic_microangiopathy",
    "sickle_cell_disease",
    "no_significant_abnormality",
    "insufficient_evidence",
)

#: Put first (and only then present) when no listed differential reaches the floor of evidence
#: although abnormal findings were seen (see ``top_answer`` in ``differentials.yaml``).
NO_LISTED_FIT = "no_listed_differential_fits"
#: Entries that are not clinical diagnoses: they keep their place at the top when they lead.
_META_IDS = ("no_significant_abnormality", "insufficient_evidence")

SCORE_NOTE = (
    "score = logistic(log-odds): a relative ranking score from expert-set weights, "
    "not a calibrated probability"
)

_OPS = ("present", "absent", "gte", "gt", "lte", "lt", "eq", "in", "between", "grade_at_least")
#: Values that mean "cannot say" and make a criterion missing rather than evidence.
_UNKNOWN = (None, "not_assessed", "indeterminate")


# -- the knowledge base ----------------------------------------------------------------------
@dataclass(frozen=True)
class Criterion:
    """One scored criterion (see the header of ``differentials.yaml`` for the forms)."""

    id: str
    says: str
    form: str  # "steps" | "linear" | "op" | "map" | "any_of"
    spec: Mapping[str, Any]
    source: str | None = None  # full citation of the reference the criterion rests on

    @property
    def variables(self) -> list[str]:
        if self.form == "any_of":
            return [c["var"] for c in self.spec["any_of"]]
        return [self.spec["var"]]


@dataclass(frozen=True)
class Differential:
    id: str
    name: str
    summary: str
    prior_log_odds: float
    criteria: tuple[Criterion, ...]
    next_tests: tuple[str, ...]
    references: tuple[str, ...]  # full citations


@dataclass(frozen=True)
class TopAnswer:
    """The floor of evidence under which no listed differential is ranked first."""

    floor_score: float
    name: str
    summary: str
    next_tests: tuple[str, ...]
    references: tuple[str, ...]


@dataclass(frozen=True)
class KnowledgeBase:
    differentials: tuple[Differential, ...]
    path: str
    top_answer: TopAnswer | None = None


def known_variables() -> set[str]:
    """Every input name a criterion may use."""
    names = set(finding_variables(compute_findings({}, cells=[], stain="nmb")))
    names |= {f"context.{k}" for k in CONTEXT_FIELDS}
    names |= {f"derived.{k}" for k in DERIVED}
    return names


def load_knowledge_base(path: str | Path | None = None) -> KnowledgeBase:
    """Read (once) and check the differentials file; ``MorphError("bad_config")`` if invalid."""
    return _load_kb_cached(str(path or DIFFERENTIALS_RULES_PATH))


@lru_cache(maxsize=8)
def _load_kb_cached(path: str) -> KnowledgeBase:
    from .io import read_yaml

    data = read_yaml(path)
    return _parse_kb(data, path)


def _parse_kb(data: Any, path: str) -> KnowledgeBase:
    def bad(msg: str) -> MorphError:
        return MorphError("bad_config", msg, path=path)

    if not isinstance(data, dict) or not isinstance(data.get("differentials"), list):
        raise bad("the knowledge base must hold a 'differentials' list")
    refs = data.get("references") or {}
    variables = known_variables()
    out: list[Differential] = []
    seen: set[str] = set()
    for i, entry in enumerate(data["differentials"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise bad(f"differentials[{i}] needs an 'id'")
        did = entry["id"]
        if did in seen:
            raise bad(f"duplicate differential id {did!r}")
        seen.add(did)
        crits = []
        cids: set[str] = set()
        for j, raw in enumerate(entry.get("criteria") or []):
            where = f"{did}.criteria[{j}]"
            crit = _parse_criterion(raw, where, variables, bad, refs)
            if crit.id in cids:
                raise bad(f"{where}: duplicate criterion id {crit.id!r}")
            cids.add(crit.id)
            crits.append(crit)
        ref_keys = entry.get("references") or []
        for key in ref_keys:
            if key not in refs:
                raise bad(f"{did}: reference {key!r} is not in the 'references' section")
        try:
            prior = float(entry["prior_log_odds"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad(f"{did}: 'prior_log_odds' must be a number") from exc
        out.append(Differential(
            id=did,
            name=str(entry.get("name") or did),
            summary=" ".join(str(entry.get("summary") or "").split()),
            prior_log_odds=prior,
            criteria=tuple(crits),
            next_tests=tuple(str(t) for t in entry.get("next_tests") or []),
            references=tuple(str(refs[k]) for k in ref_keys),
        ))
    return KnowledgeBase(differentials=tuple(out), path=path,
                         top_answer=_parse_top_answer(data.get("top_answer"), refs, bad))


def _parse_top_answer(raw: Any, refs: Mapping[str, str], bad: Any) -> TopAnswer | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("id") != NO_LISTED_FIT:
        raise bad(f"top_answer must be a mapping with id {NO_LISTED_FIT!r}")
    floor: Any = raw.get("floor_score")
    if not _is_num(floor) or not 0.0 < float(floor) < 1.0:
        raise bad("top_answer.floor_score must be a number between 0 and 1")
    for key in raw.get("references") or []:
        if key not in refs:
            raise bad(f"top_answer: reference {key!r} is not in the 'references' section")
    return TopAnswer(
        floor_score=float(floor), name=str(raw.get("name") or NO_LISTED_FIT),
        summary=" ".join(str(raw.get("summary") or "").split()),
        next_tests=tuple(str(t) for t in raw.get("next_tests") or []),
        references=tuple(str(refs[k]) for k in raw.get("references") or []),
    )


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _parse_criterion(raw: Any, where: str, variables: set[str], bad: Any,
                     refs: Mapping[str, str] | None = None) -> Criterion:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise bad(f"{where}: a criterion needs an 'id'")
    forms = [f for f in ("steps", "linear", "map", "any_of", "op") if f in raw]
    if len(forms) != 1:
        raise bad(f"{where}: give exactly one of steps, linear, map, any_of or op")
    form = forms[0]
    vars_used = [c.get("var") for c in raw["any_of"]] if form == "any_of" and isinstance(
        raw["any_of"], list) else [raw.get("var")]
    for v in vars_used + _superseding(raw) + ([raw["alternative"]] if "alternative" in raw else []):
        if v not in variables:
            raise bad(f"{where}: unknown input {v!r}")
    if form == "steps":
        steps = raw["steps"]
        if not isinstance(steps, list) or not steps or not all(
                isinstance(s, list) and len(s) == 2 and _is_num(s[0]) and _is_num(s[1]) for s in steps):
            raise bad(f"{where}: steps must be a list of [threshold, weight] pairs")
        ts = [s[0] for s in steps]
        if ts != sorted(ts) or len(set(ts)) != len(ts):
            raise bad(f"{where}: step thresholds must increase")
        ws = [float(raw.get("below", 0.0))] + [float(s[1]) for s in steps]
        up = all(b >= a for a, b in zip(ws, ws[1:], strict=False))
        down = all(b <= a for a, b in zip(ws, ws[1:], strict=False))
        if not (up or down):
            raise bad(f"{where}: step weights (below, then each step) must be monotone")
    elif form == "linear":
        lin = raw["linear"]
        if not isinstance(lin, dict) or not all(_is_num(lin.get(k)) for k in ("from", "to", "weight")) \
                or lin["from"] == lin["to"]:
            raise bad(f"{where}: linear needs numbers from, to (different) and weight")
    elif form == "map":
        if not isinstance(raw["map"], dict) or not all(_is_num(w) for w in raw["map"].values()):
            raise bad(f"{where}: map must be value -> weight")
    elif form == "any_of":
        if not isinstance(raw["any_of"], list) or not raw["any_of"]:
            raise bad(f"{where}: any_of must be a list of conditions")
        for c in raw["any_of"]:
            _check_op(c, where, bad)
        _check_weights(raw, where, bad)
    else:
        _check_op(raw, where, bad)
        _check_weights(raw, where, bad)
    source = raw.get("source")
    if source is not None and source not in (refs or {}):
        raise bad(f"{where}: source {source!r} is not in the 'references' section")
    return Criterion(id=raw["id"], says=str(raw.get("says") or raw["id"]), form=form, spec=raw,
                     source=None if source is None else str((refs or {})[source]))


def _check_op(c: Any, where: str, bad: Any) -> None:
    if not isinstance(c, dict) or c.get("op") not in _OPS:
        raise bad(f"{where}: op must be one of {', '.join(_OPS)}")
    op, val = c["op"], c.get("value")
    if op in ("gte", "gt", "lte", "lt") and not _is_num(val):
        raise bad(f"{where}: {op} needs a numeric value")
    if op == "between" and not (isinstance(val, list) and len(val) == 2 and all(_is_num(x) for x in val)):
        raise bad(f"{where}: between needs [low, high]")
    if op == "grade_at_least" and val not in GRADES:
        raise bad(f"{where}: grade_at_least needs one of {', '.join(GRADES)}")
    if op == "in" and not isinstance(val, list):
        raise bad(f"{where}: in needs a list")


def _check_weights(raw: Mapping[str, Any], where: str, bad: Any) -> None:
    if not _is_num(raw.get("weight")) or not _is_num(raw.get("otherwise", 0.0)):
        raise bad(f"{where}: weight (and otherwise) must be numbers")


# -- evaluation ------------------------------------------------------------------------------
def _superseding(spec: Mapping[str, Any]) -> list[Any]:
    """The inputs that, when known, answer a criterion's question instead of it (``superseded_by``:
    one name or a list)."""
    sup = spec.get("superseded_by")
    return [] if sup is None else list(sup) if isinstance(sup, list) else [sup]


def _condition(c: Mapping[str, Any], value: Any) -> bool:
    op: str = c["op"]
    ref: Any = c.get("value")
    if op == "present":
        return value is True or value == "present"
    if op == "absent":
        return value is False or value == "absent"
    if op == "eq":
        return bool(value == ref)
    if op == "in":
        return value in ref
    if op == "grade_at_least":
        r = grade_rank(value)
        return r is not None and r >= GRADES.index(ref)
    if not _is_num(value):
        return False
    v = float(value)
    if op == "gte":
        return v >= ref
    if op == "gt":
        return v > ref
    if op == "lte":
        return v <= ref
    if op == "lt":
        return v < ref
    lo, hi = ref  # between
    return bool(lo <= v <= hi)


def _score_value(crit: Criterion, value: Any) -> float:
    s = crit.spec
    if crit.form == "steps":
        w = float(s.get("below", 0.0))
        for t, wt in s["steps"]:
            if float(value) >= t:
                w = float(wt)
        return w
    if crit.form == "linear":
        lin = s["linear"]
        frac = (float(value) - lin["from"]) / (lin["to"] - lin["from"])
        return float(lin["weight"]) * min(1.0, max(0.0, frac))
    if crit.form == "map":
        return float(s["map"].get(value, 0.0))
    return float(s["weight"]) if _condition(s, value) else float(s.get("otherwise", 0.0))


def _fmt(var: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_num(value):
        v = float(value)
        num = f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        if var.startswith("context."):
            unit = CONTEXT_FIELDS[var.split(".", 1)[1]]["unit"]
            return f"{num}{'%' if unit == '%' else ' ' + unit}"
        if var.endswith(".percent") or var.endswith("cv_percent") or ".ci95_" in var:
            return f"{num}%"
        return num
    return str(value).replace("_", " ")


def _interval_note(var: str, variables: Mapping[str, Any]) -> str:
    """' (estimate 12%, 95% CI 9.1-15.6%)' for a fraction, so that a reader sees how far the
    interval lets the criterion fire; '' when the input has no interval."""
    base, _, leaf = var.rpartition(".")
    if leaf not in ("percent", "ci95_low", "ci95_high"):
        return ""
    lo, hi = variables.get(f"{base}.ci95_low"), variables.get(f"{base}.ci95_high")
    if not (_is_num(lo) and _is_num(hi)):
        return ""
    est = variables.get(f"{base}.percent")
    head = f"estimate {est:.3g}%, " if leaf != "percent" and _is_num(est) else ""
    return f" ({head}95% CI {lo:.3g}-{hi:.3g}%)"


def _evaluate(diff: Differential, variables: Mapping[str, Any]) -> dict[str, Any]:
    log_odds = diff.prior_log_odds
    contributions: list[dict[str, Any]] = []
    missing: list[str] = []
    for crit in diff.criteria:
        if any(variables.get(sup) not in _UNKNOWN for sup in _superseding(crit.spec)):
            continue
        if crit.form == "any_of":
            conds = crit.spec["any_of"]
            vals = [variables.get(c["var"]) for c in conds]
            known = [(c, v) for c, v in zip(conds, vals, strict=True) if v not in _UNKNOWN]
            holds = any(_condition(c, v) for c, v in known)
            if not holds and len(known) < len(conds):
                missing.append(f"{crit.says} ({', '.join(crit.variables)})")
                continue
            w = float(crit.spec["weight"]) if holds else float(crit.spec.get("otherwise", 0.0))
            shown = "; ".join(f"{c['var'].split('.', 1)[1]}: {_fmt(c['var'], v)}" for c, v in known)
            value: Any = {c["var"]: v for c, v in known}
        else:
            var = crit.spec["var"]
            raw = variables.get(var)
            if raw in _UNKNOWN:
                alt = crit.spec.get("alternative")
                if alt is not None and variables.get(alt) not in _UNKNOWN:
                    continue  # another criterion answers the same question
                why = "indeterminate: count more cells" if raw == "indeterminate" else (
                    "not given" if var.startswith("context.") else "not assessed")
                missing.append(f"{crit.says} ({var}: {why})")
                continue
            w = _score_value(crit, raw)
            shown, value = _fmt(var, raw) + _interval_note(var, variables), raw
        log_odds += w
        contributions.append({
            "criterion": crit.id,
            "text": f"{crit.says}: {shown}",
            "value": value,
            "log_odds": round(w, 3),
            "source": crit.source,
        })
    for_ = sorted((c for c in contributions if c["log_odds"] > 0), key=lambda c: -c["log_odds"])
    against = sorted((c for c in contributions if c["log_odds"] < 0), key=lambda c: c["log_odds"])
    return {
        "id": diff.id,
        "name": diff.name,
        "score": round(_logistic(log_odds), 4),
        "log_odds": round(log_odds, 3),
        "prior_log_odds": diff.prior_log_odds,
        "evidence_for": [f"{c['text']} (+{c['log_odds']:.1f})" for c in for_],
        "evidence_against": [f"{c['text']} ({c['log_odds']:.1f})" for c in against],
        "missing": missing,
        "next_tests": list(diff.next_tests),
        "references": list(diff.references),
        "contributions": contributions,
    }


def _logistic(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


#: values computed from the context, or from the context and the smear together (rule_variables)
DERIVED = ("mentzer_index", "corrected_reticulocytes_high")


def rule_variables(findings: Mapping[str, Any], context: ClinicalContext) -> dict[str, Any]:
    """Every input the rules may use: findings, ``context.*`` and ``derived.*`` (:data:`DERIVED`)."""
    v = finding_variables(findings)
    for k, val in context.to_dict().items():
        v[f"context.{k}"] = val
    v["derived.mentzer_index"] = context.mentzer_index
    # the smear's upper bound corrected for the anaemia: "under 1%" then means the marrow is not
    # answering the anaemia, which an uncorrected count of 1% does not say
    v["derived.corrected_reticulocytes_high"] = context.corrected_reticulocyte_percent(v["reticulocytes.ci95_high"])
    return v


def rank(findings: Mapping[str, Any], context: ClinicalContext,
         kb: KnowledgeBase | None = None) -> list[dict[str, Any]]:
    """Score every differential of the knowledge base; highest score first."""
    return _rank(rule_variables(findings, context), findings, kb or load_knowledge_base())


def _rank(variables: Mapping[str, Any], findings: Mapping[str, Any], kb: KnowledgeBase) -> list[dict[str, Any]]:
    """:func:`rank` from the rule variables already computed (``diagnose`` reports them too)."""
    order = {d.id: i for i, d in enumerate(kb.differentials)}
    out = [_evaluate(d, variables) for d in kb.differentials]
    out.sort(key=lambda d: (-d["log_odds"], order[d["id"]]))
    if kb.top_answer is not None:
        honest = _no_listed_fit(out, findings, kb.top_answer)
        if honest is not None:
            out.insert(0, honest)
    return out


def _no_listed_fit(ranked: Sequence[Mapping[str, Any]], findings: Mapping[str, Any],
                   top: TopAnswer) -> dict[str, Any] | None:
    """The honest first line when the best listed entry is under the floor although abnormal
    findings were seen; ``None`` when a listed entry (or a meta entry) may lead."""
    if not ranked or ranked[0]["id"] == "insufficient_evidence" or ranked[0]["score"] >= top.floor_score:
        return None
    seen = abnormal_findings(findings)
    if not seen:
        return None  # a normal smear: no_significant_abnormality (or the context) speaks
    closest = [d for d in ranked if d["id"] not in _META_IDS][:2]
    log_odds = math.log(top.floor_score / (1.0 - top.floor_score))
    return {
        "id": NO_LISTED_FIT,
        "name": top.name,
        "score": round(top.floor_score, 4),
        "log_odds": round(log_odds, 3),
        "prior_log_odds": round(log_odds, 3),
        "evidence_for": [f"abnormal finding seen: {f}" for f in seen],
        "evidence_against": [
            f"closest listed: {d['id']} (score {d['score']:.2f}, under the floor {top.floor_score:g})"
            for d in closest],
        "missing": [],
        "next_tests": list(top.next_tests),
        "references": list(top.references),
        "contributions": [],
        "floor_score": top.floor_score,
        "abnormal_findings": seen,
    }


# -- public API ------------------------------------------------------------------------------
def diagnose(
    counts: Mapping[str, int],
    *,
    um_per_px: float | None = None,
    context: Mapping[str, Any] | ClinicalContext | None = None,
    cells: Sequence[Mapping[str, Any]] | None = None,
    stain: str | None = None,
    scale: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Findings and ranked differentials for one case.

    Args:
        counts: label -> number of (non-border) cells; may include ``unidentified``,
            ``unclassified`` and ``platelet``.
        um_per_px: the scale the cell sizes were measured at.
        context: raw clinical context (validated here; ``MorphError("bad_context")``).
        cells: ``[{"label", "kind", "diameter_um", "eccentricity"}]`` for size findings.
        stain: ``"nmb"`` (supravital) lets the smear say whether reticulocytes are absent;
            ``"wright"`` or ``None`` (unknown) leave them ``not_assessed``.
        scale: the case's resolved scale (see :func:`morph.findings.compute_findings`); its
            ``um_per_px`` replaces ``um_per_px``.

    Returns:
        ``(findings, differentials)``; each differential is ``{id, name, score, log_odds,
        prior_log_odds, evidence_for, evidence_against, missing, next_tests, references,
        contributions}``, sorted by score (see :data:`SCORE_NOTE`).
    """
    if scale is not None:
        um_per_px = scale["um_per_px"]
    check_um_per_px(um_per_px)
    check_stain(stain, optional=True)
    ctx = validate_context(context)
    findings = compute_findings(counts, um_per_px=um_per_px, cells=cells, stain=stain, scale=scale)
    findings["context"] = ctx.to_dict()
    variables = rule_variables(findings, ctx)
    findings["derived"] = {k: None if (v := variables[f"derived.{k}"]) is None else round(v, 2) for k in DERIVED}
    findings["score_note"] = SCORE_NOTE
    return findings, _rank(variables, findings, load_knowledge_base())


def list_differentials() -> list[dict[str, Any]]:
    """``[{id, name, summary}]`` for every differential the engine can rank.

    Besides the clinical differentials this includes ``no_significant_abnormality``,
    ``insufficient_evidence`` ("Not enough evidence: analyse more fields"), which ranks first
    when too few cells were assessed and the clinical context supports nothing else, and last
    ``no_listed_differential_fits``, put first (and only then) when abnormal findings were seen
    but no listed entry reaches the floor of evidence.
    """
    kb = load_knowledge_base()
    out = [{"id": d.id, "name": d.name, "summary": d.summary} for d in kb.differentials]
    if kb.top_answer is not None:
        out.append({"id": NO_LISTED_FIT, "name": kb.top_answer.name, "summary": kb.top_answer.summary})
    return out
