"""``morph diagnose CASE.json``: findings and ranked differentials from a report or from counts."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any, TextIO

from .common import add_case_options, check_output_file, print_findings

_COUNTS_KEYS = ("counts", "um_per_px", "context", "stain", "cells")

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose", help="rank differentials from a report or from cell counts (decision support)",
        description="Compute findings and ranked, explained differentials for one case. CASE.json "
        "is either a report written by `morph analyze --json` (counts are recomputed from its "
        "non-border cells at the report's scale) or {\"counts\": {label: n, ...}, \"um_per_px\": x, "
        "\"context\": {...}, \"stain\": \"wright\"|\"nmb\"} (all but counts optional). "
        "Decision support only, not a diagnosis.",
    )
    p.add_argument("case", metavar="CASE.json", help="an analyze report or a counts file")
    p.add_argument("--context", metavar="C.json", default=None,
                   help="clinical context JSON; its fields override those in CASE.json")
    add_case_options(p, stain_default=None)
    p.add_argument("--json", metavar="OUT.json", default=None, help="write findings and differentials")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from morph.context import read_context_file
    from morph.differentials import SCORE_NOTE, diagnose
    from morph.errors import MorphError
    from morph.io import read_json, write_json
    from morph.pipeline import DISCLAIMER

    check_output_file(args.json, "--json")
    case = load_case(read_json(args.case), args.case)
    context = dict(case["context"] or {})
    ctx_source = args.case
    if args.context:
        context.update(read_context_file(args.context))
        ctx_source = f"{args.case} + {args.context}"
    stain = args.stain or case["stain"]
    try:
        findings, differentials = diagnose(
            case["counts"], um_per_px=case["um_per_px"], context=context, cells=case["cells"],
            stain=stain,
        )
    except MorphError as exc:
        # the case file is bad input as a whole (exit 2): an unknown label is a bad request here
        where = ctx_source if exc.code == "bad_context" else args.case
        code = "bad_request" if exc.code == "bad_label" else exc.code
        raise MorphError(code, exc.message, path=where, detail={"field": exc.path}) from exc
    out = {
        "case": str(args.case),
        "source": case["source"],
        "counts": case["counts"],
        "um_per_px": case["um_per_px"],
        "stain": stain,
        "context": findings.get("context", {}),
        "findings": findings,
        "differentials": differentials,
        "score_note": SCORE_NOTE,
        "disclaimer": DISCLAIMER,
    }
    print_diagnosis(out)
    if args.json:
        write_json(args.json, out)
        print(f"diagnosis written to {args.json}")
    return 0


def load_case(data: Any, name: str) -> dict[str, Any]:
    """Normalise either input shape to ``{source, counts, um_per_px, context, cells, stain}``."""
    from morph.errors import MorphError

    if not isinstance(data, dict):
        raise MorphError("bad_request", "expected a JSON object (an analyze report or {\"counts\": ...})",
                         path=name)
    if "images" in data:
        return _from_report(data, name)
    if "counts" in data:
        unknown = sorted(set(data) - set(_COUNTS_KEYS))
        if unknown:
            raise MorphError("bad_request", f"unknown key(s) {', '.join(unknown)}; a counts file may "
                             f"hold {', '.join(_COUNTS_KEYS)}", path=name)
        if not isinstance(data["counts"], dict):
            raise MorphError("bad_request", "'counts' must be an object of label -> number", path=name)
        cells = data.get("cells")
        if cells is not None and not isinstance(cells, list):
            raise MorphError("bad_request", "'cells' must be a list", path=name)
        return {"source": "counts", "counts": data["counts"], "um_per_px": data.get("um_per_px"),
                "context": _context_of(data, name), "cells": cells, "stain": data.get("stain")}
    raise MorphError(
        "bad_request",
        "not a case: expected a report written by `morph analyze --json` (with \"images\") or "
        "{\"counts\": {label: n, ...}}",
        path=name,
    )


def _context_of(data: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    from morph.errors import MorphError

    ctx = data.get("context")
    if ctx is not None and not isinstance(ctx, dict):
        raise MorphError("bad_context", "'context' must be a JSON object", path=name)
    return ctx


def _from_report(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    from morph.errors import MorphError

    images = data["images"]
    if not isinstance(images, list):
        raise MorphError("bad_request", "'images' must be a list of fields", path=name)
    counts: Counter[str] = Counter()
    cells: list[dict[str, Any]] = []
    um: float | None = None
    for i, im in enumerate(images):
        if not isinstance(im, dict) or not isinstance(im.get("cells", []), list):
            raise MorphError("bad_request", f"images[{i}] is not a field with a 'cells' list", path=name)
        if im.get("error"):
            continue  # a field that could not be analysed holds no cells
        if um is None and im.get("um_per_px") is not None:
            um = im["um_per_px"]
        for j, c in enumerate(im.get("cells", [])):
            if not isinstance(c, dict) or not isinstance(c.get("label"), str):
                raise MorphError("bad_request", f"images[{i}].cells[{j}] has no 'label'", path=name)
            if c.get("touches_border"):
                continue
            counts[c["label"]] += 1
            cells.append({"label": c["label"], "kind": c.get("kind"),
                          "diameter_um": c.get("diameter_um"), "eccentricity": c.get("eccentricity")})
    raw_findings = data.get("findings")
    findings: Mapping[str, Any] = raw_findings if isinstance(raw_findings, dict) else {}
    # `morph analyze --context` keeps the validated context in the report's findings
    context = _context_of(data, name)
    if context is None and isinstance(findings.get("context"), dict) and findings["context"]:
        context = dict(findings["context"])
    return {"source": "report", "counts": dict(sorted(counts.items())), "um_per_px": um,
            "context": context, "cells": cells, "stain": data.get("stain") or findings.get("stain")}


# -- terminal output -----------------------------------------------------------------------------
def print_diagnosis(result: Mapping[str, Any], out: TextIO | None = None, detailed: int = 3) -> None:
    """Readable summary: key findings, then the ranked list with the top evidence."""
    w = (out or sys.stdout).write
    w(f"case: {result['case']} ({result['source']})\n")
    print_findings(result["findings"], result["differentials"], result["disclaimer"], out, detailed)
