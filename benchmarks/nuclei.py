"""Nucleated-cell benchmark: red-cell and nucleated-cell precision/recall on rendered blood,
marrow and iron-deficiency ring-cell fields (dense and sparse), with and without the rules that
a nucleus is a compact body, not the dark rim of a ring cell, and bluer than the red cells, not
two red cells overlapping (issue 11, item 3).

Usage (single core)::

    taskset -c 0 .venv/bin/python benchmarks/nuclei.py [--fields 8] [--localizer shipped|none|DIR]

Rows: one per set and rule set: both rules off first (the baseline row: ``nucleus_rim_thickness=0``,
``nucleus_share_margin=0``), the rim rule alone, then both (the shipped configuration). Columns:
    rbc P / R: red cells matched one to one to ground-truth red-cell boxes (centre in box,
        :func:`morph.evaluation.box_matches`).
    nuc P / R: nucleated cells matched likewise to the nucleated cells' boxes.
    false nuc/f: unmatched nucleated detections per field (a ring cell's rim read as a nucleus
        feeds hypersegmented-neutrophil and leukoerythroblastic findings).
    then the share of each white-cell and erythroblast label whose box holds a nucleated
        detection's centre (neutrophil, hypersegmented, lymphocyte, monocyte, nucleated red
        cell, normoblast, megaloblast, other white cell).
Sets: ``blood`` and ``marrow`` (``render_field`` seeds 0..n-1), ``ring`` and ``ring sparse``
(``render_ring_field`` seeds 0..n-1, sparse = 5-40 cells). Deterministic.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from morph.evaluation import box_matches  # noqa: E402
from morph.localize import CentreDetector, load_localizer  # noqa: E402
from morph.segment import SegmentConfig, segment_field  # noqa: E402
from morph.synth import SynthField, render_field, render_ring_field  # noqa: E402

WHITE_LABELS = ("neutrophil", "hypersegmented_neutrophil", "lymphocyte", "monocyte", "nucleated_rbc",
                "normoblast", "megaloblast", "other_wbc")
SHORT = {"neutrophil": "neut", "hypersegmented_neutrophil": "hyper", "lymphocyte": "lymph",
         "monocyte": "mono", "nucleated_rbc": "nrbc", "normoblast": "normob", "megaloblast": "megalo",
         "other_wbc": "otherw"}

SETS: dict[str, Callable[[int], SynthField]] = {
    "blood": lambda s: render_field(s, field_type="blood"),
    "marrow": lambda s: render_field(s, field_type="marrow"),
    "ring": lambda s: render_ring_field(s),
    "ring sparse": lambda s: render_ring_field(s, sparse=True),
}
RULES: dict[str, SegmentConfig] = {
    "rules off": SegmentConfig(nucleus_rim_thickness=0.0, nucleus_share_margin=0.0),
    "rim rule only": SegmentConfig(nucleus_share_margin=0.0),
    "rim + hue rules": SegmentConfig(),
}


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
    ap.add_argument("--localizer", default="shipped", help="'shipped' (models/locnet-v1), 'none' or a folder")
    return ap


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)
    loc: CentreDetector | None = None if args.localizer == "none" else load_localizer(
        None if args.localizer == "shipped" else args.localizer)
    t0 = time.perf_counter()
    print(f"localizer: {loc.name + ' ' + loc.version if loc else 'hand-made seeds'}; {args.fields} fields per set")
    print(f"{'set':<13}{'rule':<14}{'rbc P':>7}{'rbc R':>7}{'nuc P':>7}{'nuc R':>7}{'false nuc/f':>12}"
          + "".join(f"{SHORT[lab]:>8}" for lab in WHITE_LABELS))
    for name, render in SETS.items():
        fields = [render(s) for s in range(args.fields)]
        for rule, cfg in RULES.items():
            t = Tally()
            for f in fields:
                t.add(f, segment_field(f.image, um_per_px=f.um_per_px, config=cfg, centres=loc).cells)
            print(f"{name:<13}{rule:<14}{t.row()}")
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
