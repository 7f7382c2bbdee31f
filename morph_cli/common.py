"""Helpers shared by the subcommands (argument types, model loading, summaries)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=None,
        help="model folder path or name under models/ (default: the shipped default model)",
    )


def load_classifier(name: str | None) -> Any:
    """Load the named model, or the shipped default. Falls back to localization
    only (with a note on stderr) when no model is shipped and none was asked for."""
    from morph.errors import MorphError

    try:
        from morph.classify import load_model
    except ImportError:
        if name:
            raise
        print("note: no classifier available; cells are localised only", file=sys.stderr)
        return None
    try:
        return load_model(name)
    except MorphError as exc:
        if name or exc.code != "model_not_found":
            raise
        print(f"note: {exc}; cells are localised only", file=sys.stderr)
        return None


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
    diffs = report.get("differentials") or []
    if diffs:
        w("differentials (decision support, not a diagnosis):\n")
        for i, d in enumerate(diffs[:5], 1):
            w(f"  {i}. {d.get('name', d.get('id'))}  score {d.get('score', 0):.2f}\n")
    for msg in report.get("warnings", []):
        w(f"warning: {msg}\n")
