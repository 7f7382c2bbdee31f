"""Helpers shared by the subcommands (argument types, model loading, summaries)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO


def um_per_px_arg(text: str) -> float:
    """``--um-per-px``: a number, checked by the library's one scale rule."""
    from morph.context import check_um_per_px
    from morph.errors import MorphError

    try:
        v = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    try:
        return float(check_um_per_px(v))  # type: ignore[arg-type]
    except MorphError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc


def add_case_options(p: argparse.ArgumentParser, stain_default: str | None = "wright") -> None:
    """``--um-per-px`` and ``--stain``, the same for analyze, score (and diagnose's stain)."""
    from morph.context import STAINS

    if stain_default is not None:
        p.add_argument("--um-per-px", type=um_per_px_arg, default=None,
                       help="micrometres per pixel (default: the Chula 1000x scale)")
        p.add_argument("--stain", choices=STAINS, default=stain_default,
                       help="wright (Wright/Giemsa smear) or nmb (new methylene blue reticulocyte stain)")
    else:
        p.add_argument("--stain", choices=STAINS, default=None,
                       help="stain of the smear (nmb lets the smear decide whether reticulocytes are "
                       "absent); default: from CASE.json, else unknown")


def int_in_range(lo: int, hi: int | None = None, what: str = "") -> Any:
    """An argparse type: a whole number in ``[lo, hi]`` (``hi=None``: no upper bound)."""
    name = f"{what} " if what else ""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from exc
        if v < lo or (hi is not None and v > hi):
            bound = f"{lo}-{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{name}must be {bound}, got {text}")
        return v

    return parse


def add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="shipped", metavar="DIR|shipped|none",
        help="classifier: a model folder path or name under models/, 'shipped' (default: the "
        "shipped model) or 'none' (localise cells only)",
    )


def add_localizer_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--localizer", default="shipped", metavar="DIR|shipped|none",
        help="centre-map localizer: a folder path or name under models/, 'shipped' (default: the "
        "shipped locnet-v1) or 'none' (the hand-made seeds)",
    )


def expand_images(items: list[str]) -> list[Path]:
    """Expand folders into their image files; keep files as given (bad ones fail later, named)."""
    from morph.io import list_images

    out: list[Path] = []
    for it in items:
        p = Path(it)
        out.extend(list_images(p) if p.is_dir() else [p])
    return out


def print_case_summary(report: dict[str, Any], out: Any = None) -> None:
    """A readable summary of a case report (dict form) for the terminal."""
    out = out or sys.stdout
    w = out.write
    model = report.get("model") or {}
    w(f"model: {model.get('name') or 'none (localization only)'} {model.get('version') or ''}\n")
    for im in report.get("images", []):
        if im.get("error"):
            w(f"  {im['path']}: SKIPPED - {im['error']['message']} [{im['error']['code']}]\n")
            continue
        n = sum(1 for c in im["cells"] if not c["touches_border"])
        med = im.get("median_rbc_diameter_um")
        med_s = f"{med:.2f} um" if med else "n/a"
        w(f"  {im['path']}: {im['width']}x{im['height']}, {n} cells counted "
          f"({len(im['cells']) - n} at border), median RBC diameter {med_s}\n")
        for msg in im.get("warnings", []):
            w(f"    warning: {msg}\n")
    counts = report.get("counts", {})
    if counts:
        w("counts:\n")
        for lab, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            w(f"  {lab:<28}{n:>6}\n")
    for msg in report.get("warnings", []):
        w(f"warning: {msg}\n")
    if report.get("findings") and report.get("differentials"):
        print_findings(report["findings"], report["differentials"], report.get("disclaimer", ""), out)

def print_findings(
    findings: Mapping[str, Any],
    differentials: Sequence[Mapping[str, Any]],
    disclaimer: str,
    out: TextIO | None = None,
    detailed: int = 3,
) -> None:
    """Key findings, then the ranked differentials with their top evidence."""
    w = (out or sys.stdout).write
    f = findings
    w(f"evidence: {f['evidence']['message']}\n")
    notable = [f"{lab.replace('_', ' ')} {e['percent']:.1f}% ({e['grade']})"
               for lab, e in f["rbc_morphology"].items()
               if e.get("grade") in ("1+", "2+", "3+")]
    if notable:
        w(f"red cells: {', '.join(notable)}\n")
    mo = f["macro_ovalocytes"]
    if mo["grade"] != "not_assessed":
        w(f"macro-ovalocytes: {mo['percent']:.1f}% ({mo['grade']})\n")
    w(f"reticulocytes: {f['reticulocytes']['message']}\n")
    nr = f["nucleated_rbc"]
    if nr["status"] == "present":
        per = f"{nr['per_100_wbc']:.1f} per 100 white cells" if nr["per_100_wbc"] is not None else "seen"
        w(f"nucleated red cells: {per}\n")
    for key, label in (("hypersegmented_neutrophils", "hypersegmented neutrophils"),
                       ("megaloblasts", "megaloblasts")):
        status = f[key]["status"]
        if status != "not_assessed":
            pct = f" ({f[key]['percent']:.1f}% of {f[key]['of']})" if f[key]["percent"] is not None else ""
            hint = ": count more cells" if status == "indeterminate" else ""
            w(f"{label}: {status}{hint}{pct}\n")
    an = f["anisocytosis"]
    if an["grade"] != "not_assessed":
        w(f"anisocytosis: diameter CV {an['cv_percent']:.1f}% ({an['grade']})\n")
    for msg in f.get("warnings", []):
        w(f"warning: {msg}\n")
    w("differentials (ranking scores, not probabilities):\n")
    for i, d in enumerate(differentials, 1):
        w(f"  {i:>2}. {d['id']:<34}{d['score']:.2f}  {d['name']}\n")
        if i <= detailed:
            if d["evidence_for"]:
                w(f"        for:     {'; '.join(d['evidence_for'][:3])}\n")
            if d["evidence_against"]:
                w(f"        against: {'; '.join(d['evidence_against'][:2])}\n")
            if d["missing"]:
                w(f"        missing: {len(d['missing'])} input(s), e.g. {d['missing'][0]}\n")
            if d["next_tests"]:
                w(f"        next:    {d['next_tests'][0]}\n")
    w(f"{disclaimer}\n")


def check_inputs_exist(items: Sequence[str]) -> None:
    """Every input named on the command line exists (exit 2 before any model is loaded)."""
    from morph.errors import MorphError

    for it in items:
        if not Path(it).exists():
            raise MorphError("file_not_found", "no such file or folder", path=it)


def check_output_file(path: str | None, what: str) -> None:
    """``path`` can be written as a file: not a folder, its folder there or creatable (it is
    created now) and writable. Checked before any work so that a long analysis is never lost
    to a typo at the end."""
    if path is None:
        return
    from morph.errors import MorphError

    p = Path(path)
    if p.is_dir():
        raise MorphError("bad_request", f"{what} is a folder; give a file name", path=path)
    _make_folder(p.parent, f"the folder for {what}", path)
    if not os.access(p.parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise MorphError("bad_request", f"{what} cannot be written here (permission denied)", path=path)


def check_output_folder(path: str, what: str) -> None:
    """``path`` is a writable folder, created now when missing (checked before any work)."""
    from morph.errors import MorphError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise MorphError("bad_request", f"{what} exists and is not a folder", path=path)
    _make_folder(p, what, path)
    if not os.access(p, os.W_OK | os.X_OK):
        raise MorphError("bad_request", f"{what} cannot be written (permission denied)", path=path)


def _make_folder(folder: Path, what: str, path: str) -> None:
    from morph.errors import MorphError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MorphError("bad_request", f"{what} cannot be created ({exc.strerror or exc})", path=path) from None
