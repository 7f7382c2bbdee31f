"""Nucleated-cell benchmark: red-cell and nucleated-cell precision/recall on rendered blood,
marrow, iron-deficiency ring-cell fields (dense and sparse) and new methylene blue (NMB) fields,
with and without the rules that a nucleus is a compact body, not the dark rim of a ring cell, and
bluer than the red cells, not two red cells overlapping (issue 11, item 3); on NMB also with
Wright's chromatin settings (green minus blue) instead of the stain's own (red minus blue, issue 13).

Usage (single core)::

    taskset -c 0 .venv/bin/python benchmarks/nuclei.py [--fields 8] [--sets nmb,"nmb white"]
        [--localizer shipped|none|DIR]

Rows: one per set and rule set: both rules off first (the baseline row: ``nucleus_rim_thickness=0``,
``nucleus_share_margin=0``), the rim rule alone, then both (the shipped configuration), each on the
stain's settings (``SegmentConfig.for_stain``, as the pipeline runs); NMB sets add a row with both
rules on Wright's settings (what they were read with before the stain reached localization). Columns:
    rbc P / R: red cells matched one to one to ground-truth red-cell boxes (centre in box,
        :func:`morph.evaluation.box_matches`).
    nuc P / R: nucleated cells matched likewise to the nucleated cells' boxes.
    false nuc/f: unmatched nucleated detections per field (a ring cell's rim read as a nucleus
        feeds hypersegmented-neutrophil and leukoerythroblastic findings).
    then the share of each white-cell and erythroblast label whose box holds a nucleated
        detection's centre (neutrophil, hypersegmented, lymphocyte, monocyte, nucleated red
        cell, normoblast, megaloblast, other white cell).
Sets: ``blood``, ``marrow`` and ``nmb`` (``render_field`` seeds 0..n-1), ``nmb white`` (NMB fields
with six times the usual white cells and nucleated red cells, seeds 1000..), ``ring`` and
``ring sparse`` (``render_ring_field`` seeds 0..n-1, sparse = 5-40 cells). Deterministic.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from morph.evaluation import box_matches  # noqa: E402
from morph.localize import DEFAULT_LOCALIZER_NAME, CentreDetector, load_localizer  # noqa: E402
from morph.segment import SegmentConfig, segment_field  # noqa: E402
from morph.synth import SynthField, default_label_weights, render_field, render_ring_field  # noqa: E402

WHITE_LABELS = ("neutrophil", "hypersegmented_neutrophil", "lymphocyte", "monocyte", "nucleated_rbc",
                "normoblast", "megaloblast", "other_wbc")
SHORT = {"neutrophil": "neut", "hypersegmented_neutrophil": "hyper", "lymphocyte": "lymph",
         "monocyte": "mono", "nucleated_rbc": "nrbc", "normoblast": "normob", "megaloblast": "megalo",
         "other_wbc": "otherw"}

#: NMB fields with six times the default share of white cells and nucleated red cells
NMB_WHITE = {k: w * (6.0 if k in ("neutrophil", "lymphocyte", "nucleated_rbc") else 1.0)
             for k, w in default_label_weights("nmb").items()}
SETS: dict[str, Callable[[int], SynthField]] = {
    "blood": lambda s: render_field(s, field_type="blood"),
    "marrow": lambda s: render_field(s, field_type="marrow"),
    "ring": lambda s: render_ring_field(s),
    "ring sparse": lambda s: render_ring_field(s, sparse=True),
    "nmb": lambda s: render_field(s, field_type="nmb"),
    "nmb white": lambda s: render_field(1000 + s, field_type="nmb", label_weights=NMB_WHITE),
}
#: rule sets: the settings a field's stain gets (``for_stain``) with these changed
RULES: dict[str, dict[str, float]] = {
    "rules off": {"nucleus_rim_thickness": 0.0, "nucleus_share_margin": 0.0},
    "rim rule only": {"nucleus_share_margin": 0.0},
    "rim + hue rules": {},
}
AS_WRIGHT = "Wright settings"


def configs(stain: str) -> dict[str, SegmentConfig]:
    """The rows' settings for a set of ``stain``; other stains than Wright add Wright's own."""
    rows = {rule: replace(SegmentConfig().for_stain(stain), **changes) for rule, changes in RULES.items()}
    if SegmentConfig().for_stain(stain) != SegmentConfig():
        rows[AS_WRIGHT] = SegmentConfig()
    return rows


@dataclass
class Tally:
    fields: int = 0
    rbc: list[int] = field(default_factory=lambda: [0, 0, 0])  # matched, detections, truth
    nuc: list[int] = field(default_factory=lambda: [0, 0, 0])
    found: dict[str, list[int]] = field(default_factory=dict)  # label -> [found, truth]

    def add(self, f: SynthField, cells: list) -> None:
        self.fields += 1
        for kind, acc in (("rbc", self.rbc), ("nucleated", self.nuc)):
            boxes = np.array([c.bbox for c in f.cells if c.kind == kind], float).reshape(-1, 4)
            for i, v in enumerate(box_matches(cells, boxes, kinds=(kind,))):
                acc[i] += v
        dets = np.array([(c.x, c.y) for c in cells if c.kind == "nucleated"], float).reshape(-1, 2)
        for c in f.cells:
            if c.label in WHITE_LABELS:
                x0, y0, x1, y1 = c.bbox
                hit = bool(len(dets)) and bool(np.any((dets[:, 0] >= x0) & (dets[:, 0] < x1)
                                                      & (dets[:, 1] >= y0) & (dets[:, 1] < y1)))
                acc2 = self.found.setdefault(c.label, [0, 0])
                acc2[0] += hit
                acc2[1] += 1

    def row(self) -> str:
        def pr(a: list[int]) -> str:
            p = f"{a[0] / a[1]:.3f}" if a[1] else "-"
            r = f"{a[0] / a[2]:.3f}" if a[2] else "-"
            return f"{p:>7}{r:>7}"
        false_nuc = (self.nuc[1] - self.nuc[0]) / max(self.fields, 1)
        per = "".join(f"{(f'{v[0]}/{v[1]}' if (v := self.found.get(lab)) else '-'):>8}" for lab in WHITE_LABELS)
        return f"{pr(self.rbc)}{pr(self.nuc)}{false_nuc:>12.2f}{per}"


def get_args_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fields", type=int, default=8, help="fields per set (default 8)")
    ap.add_argument("--sets", default=None, help=f"comma-separated sets (default all: {', '.join(SETS)})")
    ap.add_argument("--localizer", default="shipped", help=f"'shipped' (models/{DEFAULT_LOCALIZER_NAME}), 'none' or a folder")
    return ap


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    loc: CentreDetector | None = None if args.localizer == "none" else load_localizer(
        None if args.localizer == "shipped" else args.localizer)
    t0 = time.perf_counter()
    print(f"localizer: {loc.name + ' ' + loc.version if loc else 'hand-made seeds'}; {args.fields} fields per set")
    print(f"{'set':<13}{'rule':<16}{'rbc P':>7}{'rbc R':>7}{'nuc P':>7}{'nuc R':>7}{'false nuc/f':>12}"
          + "".join(f"{SHORT[lab]:>8}" for lab in WHITE_LABELS))
    names = args.sets.split(",") if args.sets else list(SETS)
    unknown = [n for n in names if n not in SETS]
    if unknown:
        print(f"unknown set(s): {', '.join(unknown)}; known: {', '.join(SETS)}", file=sys.stderr)
        return 2
    for name in names:
        render = SETS[name]
        fields = [render(s) for s in range(args.fields)]
        for rule, cfg in configs(fields[0].stain if fields else "wright").items():
            t = Tally()
            for f in fields:
                t.add(f, segment_field(f.image, um_per_px=f.um_per_px, config=cfg, centres=loc).cells)
            print(f"{name:<13}{rule:<16}{t.row()}")
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
