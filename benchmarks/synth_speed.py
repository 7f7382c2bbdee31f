"""Speed of the synthetic smear renderer (morph.synth): fields and single-cell crops.

    python benchmarks/synth_speed.py [--fields 6] [--crops 600]

Prints a table: wall and CPU milliseconds per 640x480 field (each field type) and per
crop (several crop sizes/scales). CPU time is the fairer number on a shared machine.
"""

from __future__ import annotations

import argparse
import time

from morph.labels import kind_of
from morph.segment import DEFAULT_UM_PER_PX
from morph.synth import FIELD_TYPES, crop_labels, render_cell_crop, render_field


def _timeit(fn, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return 1000 * (time.perf_counter() - w0) / n, 1000 * (time.process_time() - c0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fields", type=int, default=6)
    ap.add_argument("--crops", type=int, default=600)
    args = ap.parse_args()
    render_cell_crop(0, "normal")  # warm the texture bank
    rows: list[tuple[str, str, float, float]] = []
    for ft in FIELD_TYPES:
        wall, cpu = _timeit(lambda s, ft=ft: render_field(s, field_type=ft), args.fields)
        rows.append((f"field {ft} 640x480", f"{DEFAULT_UM_PER_PX:g}", wall, cpu))
    for stain in ("wright", "nmb"):
        labels = crop_labels(stain)
        for size, um in ((48, 0.267), (64, DEFAULT_UM_PER_PX), (96, DEFAULT_UM_PER_PX)):
            def crop(i: int, labels=labels, size=size, um=um, stain=stain) -> None:
                lab = labels[i % len(labels)]
                render_cell_crop(i, lab, stain=stain, size=size,
                                 um_per_px=um * (1.6 if kind_of(lab) == "nucleated" else 1.0))
            wall, cpu = _timeit(crop, args.crops)
            rows.append((f"crop {stain} {size}px (all labels)", f"{um:g}", wall, cpu))
    print(f"{'what':36s} {'um/px':>7s} {'wall ms':>9s} {'cpu ms':>8s} {'crops/s (cpu)':>14s}")
    for what, um, wall, cpu in rows:
        rate = f"{1000 / cpu:14.0f}" if what.startswith("crop") else f"{'':14s}"
        print(f"{what:36s} {um:>7s} {wall:9.1f} {cpu:8.1f} {rate}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
