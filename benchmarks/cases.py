"""End-to-end disease cases: rendered smears of nine conditions scored by ``morph score``.

For each preset of :data:`morph.synth.CASE_PRESETS` this renders ``--cases`` cases of
``--fields`` fields (``morph.synth.render_case``, deterministic seeds) into a work folder, runs the
real command line as a subprocess (``python -m morph_cli.main score``, so refactors of the batch
code cannot break the benchmark) and reads each case's report (``OUT/cases/<case>.json``):

* **morphology**: the smear alone (no context file);
* **+Hb/MCV**: a minimal blood count (``hb_g_dl``, ``mcv_fl``) in a ``--context-file`` CSV;
* **+deciding**: for the presets whose truth the smear and the blood count cannot settle (the
  ``deciding`` field of ``CASES``), the blood count plus the one result that decides it.

It prints top-1 / top-2 (the true differential first / in the first two) per preset and
context, the thalassaemia / iron-deficiency pair (both in the top two), how often a hereditary
elliptocytosis or spherocytosis case had B12 deficiency or myelofibrosis first, and the
classifier's main misreads of the rendered cells (truth from the renderer), so that a failure
can be put on the vision or on the rules.

    python benchmarks/cases.py            # 10 cases x 5 fields per preset (about 1,000 fields scored)
    python benchmarks/cases.py --quick    # 3 cases per preset
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    preset: str                    # key of morph.synth.CASE_PRESETS
    truth: str                     # the differential id that should come first
    blood_count: dict[str, float]  # Hb (g/dL) and MCV (fL), named as morph/context.py names them
    deciding: dict[str, Any] = field(default_factory=dict)
    why: str = ""                  # why the deciding result is needed
    mimic: str | None = None       # its classic mimic (both should be in the top two)


CASES: tuple[Case, ...] = (
    Case("normal", "no_significant_abnormality", {"hb_g_dl": 14.2, "mcv_fl": 90}),
    Case("myelofibrosis", "primary_myelofibrosis", {"hb_g_dl": 9.6, "mcv_fl": 91}),
    Case("b12_deficiency", "b12_folate_deficiency", {"hb_g_dl": 7.9, "mcv_fl": 114}),
    Case("mds", "myelodysplastic_syndrome", {"hb_g_dl": 9.2, "mcv_fl": 104},
         {"b12_pg_ml": 480, "folate_ng_ml": 11},
         "the macrocytes' shape (round in MDS, oval in B12/folate deficiency) only leans towards MDS; "
         "normal B12 and folate (and, in life, a marrow) decide"),
    Case("parvovirus_crisis", "parvovirus_b19_aplastic_crisis", {"hb_g_dl": 4.8, "mcv_fl": 84},
         {"reticulocyte_percent": 0.2},
         "'reticulocytes absent' (95% upper bound under 0.5%) needs at least 765 red cells with none "
         "read as a reticulocyte (CLSI H44-A2 counts 1,000); five fields hold fewer, so from the smear "
         "alone it is 'indeterminate: count more cells'; with Hb the upper bound corrected for the "
         "anaemia says the marrow is not answering, and the laboratory count decides"),
    Case("beta_thalassaemia_major", "beta_thalassemia_major", {"hb_g_dl": 6.5, "mcv_fl": 63},
         mimic="iron_deficiency_anemia"),
    Case("iron_deficiency", "iron_deficiency_anemia", {"hb_g_dl": 8.9, "mcv_fl": 68},
         mimic="beta_thalassemia_major"),
    Case("hereditary_spherocytosis", "hereditary_spherocytosis", {"hb_g_dl": 10.8, "mcv_fl": 87}),
    Case("hereditary_elliptocytosis", "hereditary_elliptocytosis", {"hb_g_dl": 13.1, "mcv_fl": 88}),
)
NEVER_FIRST_FOR_MEMBRANE = ("b12_folate_deficiency", "primary_myelofibrosis")
CONTEXTS = ("morphology", "+Hb/MCV", "+deciding")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=10, help="cases per preset (default 10)")
    p.add_argument("--quick", action="store_true", help="3 cases per preset")
    p.add_argument("--fields", type=int, default=5, help="fields per case (default 5)")
    p.add_argument("--presets", default=None, help="comma-separated presets (default: all)")
    p.add_argument("--workers", type=int, default=2, help="morph score --workers (default 2)")
    p.add_argument("--model", default="shipped", help="morph score --model: a model folder to compare (default: shipped)")
    p.add_argument("--work", default=None, help="work folder (default: a new temporary folder, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    return p


# -- rendering -------------------------------------------------------------------------------
def _seed(preset: str, case_index: int) -> int:
    # by the preset's place in CASES, not in the selection: --presets renders the same cases
    preset_index = next(i for i, c in enumerate(CASES) if c.preset == preset)
    return 13_000 + 100 * preset_index + case_index


def render_cases(cases: list[Case], n_cases: int, n_fields: int, work: Path) -> dict[str, Any]:
    """Write every case's fields under work/input-<stain>/<case id>/; return the truth per cell."""
    from morph.io import write_image
    from morph.synth import CASE_PRESETS, render_case

    truth: dict[str, Any] = {}
    for case in cases:
        stain = "nmb" if CASE_PRESETS[case.preset].field_type == "nmb" else "wright"
        for ci in range(n_cases):
            case_id = f"{case.preset}-{ci:02d}"
            folder = work / f"input-{stain}" / case_id
            folder.mkdir(parents=True, exist_ok=True)
            fields = render_case(case.preset, _seed(case.preset, ci), n_fields)
            for fi, fld in enumerate(fields):
                name = f"field-{fi}.png"
                write_image(folder / name, fld.image)
                truth[f"{case_id}/{name}"] = [(c.x, c.y, c.label, c.bbox) for c in fld.cells]
            truth.setdefault("_um_per_px", fields[0].um_per_px)
    return truth


# -- scoring ---------------------------------------------------------------------------------
def _context_csv(path: Path, rows: dict[str, dict[str, Any]]) -> Path:
    keys = sorted({k for r in rows.values() for k in r})
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", *keys])
        for case_id, r in sorted(rows.items()):
            w.writerow([case_id, *("" if r.get(k) is None else r[k] for k in keys)])
    return path


def score(input_dir: Path, out_dir: Path, stain: str, context: Path | None, workers: int,
          model: str = "shipped") -> float:
    """Run ``morph score`` as a subprocess; returns its wall time in seconds."""
    cmd = [sys.executable, "-m", "morph_cli.main", "score", str(input_dir), "--out", str(out_dir),
           "--stain", stain, "--workers", str(workers), "--model", model]
    if context is not None:
        cmd += ["--context-file", str(context)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if res.returncode not in (0, 1):
        raise SystemExit(f"morph score failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return time.perf_counter() - t0


def read_reports(out_dir: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((out_dir / "cases").glob("*.json")):
        out[path.stem] = json.loads(path.read_text())
    return out


def run_all(cases: list[Case], n_cases: int, work: Path, workers: int, model: str = "shipped"
            ) -> dict[str, dict[str, Any]]:
    """{context: {case id: report}} over the three contexts."""
    from morph.synth import CASE_PRESETS

    by_stain: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        by_stain["nmb" if CASE_PRESETS[c.preset].field_type == "nmb" else "wright"].append(c)
    reports: dict[str, dict[str, Any]] = {k: {} for k in CONTEXTS}
    for stain, group in by_stain.items():
        inp = work / f"input-{stain}"
        ids = {f"{c.preset}-{i:02d}": c for c in group for i in range(n_cases)}
        blood = _context_csv(work / f"blood-{stain}.csv", {k: c.blood_count for k, c in ids.items()})
        for ctx, csv_path in (("morphology", None), ("+Hb/MCV", blood)):
            secs = score(inp, work / f"out-{stain}-{ctx.strip('+').replace('/', '')}", stain, csv_path, workers, model)
            print(f"  scored {len(ids)} {stain} cases ({ctx}) in {secs:.0f} s", file=sys.stderr, flush=True)
            reports[ctx].update(read_reports(work / f"out-{stain}-{ctx.strip('+').replace('/', '')}"))
        deciding = {k: c for k, c in ids.items() if c.deciding}
        if deciding:
            dec_in = work / f"input-{stain}-deciding"
            for k in deciding:
                shutil.copytree(inp / k, dec_in / k, dirs_exist_ok=True)
            dec_csv = _context_csv(work / f"deciding-{stain}.csv",
                                   {k: {**c.blood_count, **c.deciding} for k, c in deciding.items()})
            secs = score(dec_in, work / f"out-{stain}-deciding", stain, dec_csv, workers, model)
            print(f"  scored {len(deciding)} {stain} cases (+deciding) in {secs:.0f} s", file=sys.stderr, flush=True)
            reports["+deciding"].update(read_reports(work / f"out-{stain}-deciding"))
    return reports


# -- the tables ------------------------------------------------------------------------------
def _firsts(report: dict[str, Any]) -> list[str]:
    return [d["id"] for d in report.get("differentials") or []][:2]


def _rates(case: Case, reports: dict[str, Any], n_cases: int) -> dict[str, Any] | None:
    ids = [f"{case.preset}-{i:02d}" for i in range(n_cases)]
    got = [_firsts(reports[k]) for k in ids if k in reports]
    if not got:
        return None
    top1 = sum(1 for f in got if f and f[0] == case.truth)
    top2 = sum(1 for f in got if case.truth in f)
    pair = sum(1 for f in got if case.mimic and {case.truth, case.mimic} <= set(f))
    forbidden = sum(1 for f in got if f and f[0] in NEVER_FIRST_FOR_MEMBRANE)
    wrong = Counter(f[0] for f in got if f and f[0] != case.truth)
    return {"n": len(got), "top1": top1, "top2": top2, "pair": pair, "forbidden": forbidden,
            "wrong": wrong.most_common(2)}


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return f"{'-':>13}"
    return f"{r['top1']:>3}/{r['n']:<2} {r['top2']:>3}/{r['n']:<2}"


def print_table(cases: list[Case], reports: dict[str, dict[str, Any]], n_cases: int) -> None:
    head = f"{'preset':<26} {'true differential':<31}" + "".join(f" {c:>13}" for c in CONTEXTS)
    print(head + "   notes")
    print(f"{'':<26} {'':<31}" + "".join(f" {'top1  top2':>13}" for _ in CONTEXTS))
    print("-" * (len(head) + 40))
    totals = {c: [0, 0, 0] for c in CONTEXTS}
    for case in cases:
        rates = {c: _rates(case, reports[c], n_cases) for c in CONTEXTS}
        notes = []
        for ctx in ("morphology", "+Hb/MCV"):
            r = rates[ctx]
            if r is None:
                continue
            totals[ctx][0] += r["top1"]
            totals[ctx][1] += r["top2"]
            totals[ctx][2] += r["n"]
            if r["wrong"]:
                notes.append(f"{ctx} first instead: " + ", ".join(f"{w} x{n}" for w, n in r["wrong"]))
            if case.mimic:
                notes.append(f"{ctx} {case.truth}+{case.mimic} both top-2: {r['pair']}/{r['n']}")
            if case.preset.startswith("hereditary_"):
                notes.append(f"{ctx} B12/myelofibrosis first: {r['forbidden']}/{r['n']}")
        if rates["+deciding"] is not None:
            notes.append(f"+deciding = {json.dumps(case.deciding)}")
        print(f"{case.preset:<26} {case.truth:<31}" + "".join(f" {_cell(rates[c])}" for c in CONTEXTS)
              + "   " + "; ".join(notes))
    print("-" * (len(head) + 40))
    tot = "".join(f" {totals[c][0]:>3}/{totals[c][2]:<3}{totals[c][1]:>3}/{totals[c][2]:<3}"
                  if totals[c][2] else f" {'':>13}" for c in CONTEXTS[:2])
    print(f"{'all presets':<26} {'':<31}{tot}")
    print(f"{'baseline: chance':<26} {'1 of 15 listed entries':<31}  top-1 6.7%, top-2 13.3%")
    for case in cases:
        if case.why:
            print(f"  {case.preset} needs {json.dumps(case.deciding)}: {case.why}")
    for case in cases:
        print(f"  {case.preset}: {_measured(case, reports['morphology'], n_cases)}")


def _measured(case: Case, reports: dict[str, Any], n_cases: int) -> str:
    """Median assessed red cells per case and what the smear said about reticulocytes."""
    found = [reports[k]["findings"] for i in range(n_cases) if (k := f"{case.preset}-{i:02d}") in reports]
    if not found:
        return "no report"
    rbc = int(np.median([f["assessed_rbc"] for f in found]))
    out = f"median {rbc} assessed red cells per case"
    ret = Counter(f["reticulocytes"]["status"] for f in found)
    if set(ret) != {"not_assessed"}:
        more = [f["reticulocytes"].get("more_fields_to_decide") for f in found]
        known = [m for m in more if m is not None]
        out += f"; reticulocytes {dict(ret)}"
        if known:
            out += f", median {int(np.median(known))} more fields to decide"
    return out


def _drawn(cells: list[Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The drawn cells of one field as arrays, built once per field: centres (n, 2), boxes
    (n, 4) and labels."""
    return (np.asarray([(c[0], c[1]) for c in cells], float).reshape(-1, 2),
            np.asarray([c[3] for c in cells], float).reshape(-1, 4), [str(c[2]) for c in cells])


def _drawn_label(drawn: tuple[np.ndarray, np.ndarray, list[str]], x: float, y: float, radius_px: float) -> str:
    """The label of the drawn cell (:func:`_drawn`) a detection at (x, y) belongs to: the nearest
    drawn centre within ``radius_px``, else the nearest one whose box holds (x, y) (a teardrop's
    outline centre sits on its tail side, up to half a diameter off the drawn body centre: those
    were counted as "(no drawn cell)" and read as teardrops), else "(no drawn cell)"."""
    xy, boxes, labels = drawn
    d = np.hypot(xy[:, 0] - x, xy[:, 1] - y)
    inside = (boxes[:, 0] <= x) & (x < boxes[:, 2]) & (boxes[:, 1] <= y) & (y < boxes[:, 3])
    near = (d <= radius_px) | inside
    if not near.any():
        return "(no drawn cell)"
    return labels[int(np.where(near, d, np.inf).argmin())]


def misreads(truth: dict[str, Any], reports: dict[str, Any], cases: list[Case]) -> None:
    """The classifier's main misreads of rendered cells, per preset (truth from the renderer)."""
    um = float(truth.get("_um_per_px") or 0.08)
    radius_px = 0.3 * 7.5 / um
    print("\nVision on the rendered cells (morphology run; non-border cells matched to the drawn "
          "cell within 0.3 red-cell diameters, else to the drawn cell whose box holds the centre; "
          "reads of 10% or more, from 10 cells up):")
    for case in cases:
        conf: dict[str, Counter[str]] = defaultdict(Counter)
        for case_id, rep in reports.items():
            if not case_id.startswith(case.preset + "-"):
                continue
            for im in rep.get("images", []):
                cells_t = truth.get(f"{case_id}/{Path(im['path']).name}")
                if not cells_t:
                    continue
                drawn = _drawn(cells_t)
                for c in im.get("cells", []):
                    if c.get("touches_border") or c.get("kind") == "platelet":
                        continue
                    conf[_drawn_label(drawn, c["x"], c["y"], radius_px)][c["label"]] += 1
        parts = []
        for lab, reads in sorted(conf.items(), key=lambda kv: -sum(kv[1].values())):
            n = sum(reads.values())
            bad = [(r, k) for r, k in reads.most_common() if r != lab and k / n >= 0.1]
            if n >= 10 and bad:
                parts.append(f"{lab} (n={n}) -> " + ", ".join(f"{r} {100 * k / n:.0f}%" for r, k in bad))
        print(f"  {case.preset:<26} " + ("; ".join(parts) if parts else "no misread of 10% or more"))


def main(args: argparse.Namespace) -> int:
    n_cases = 3 if args.quick else args.cases
    wanted = args.presets.split(",") if args.presets else None
    cases = [c for c in CASES if wanted is None or c.preset in wanted]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="morph-cases-"))
    try:
        t0 = time.perf_counter()
        truth = render_cases(cases, n_cases, args.fields, work)
        print(f"rendered {len(cases) * n_cases} cases x {args.fields} fields in "
              f"{time.perf_counter() - t0:.0f} s into {work}", file=sys.stderr, flush=True)
        reports = run_all(cases, n_cases, work, args.workers, args.model)
        print(f"\nmorph score on rendered disease cases: {n_cases} cases x {args.fields} fields per preset "
              "(top1 = true differential first, top2 = in the first two)\n")
        print_table(cases, reports, n_cases)
        misreads(truth, reports["morphology"], cases)
    finally:
        if not args.work and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
