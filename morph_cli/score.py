"""``morph score INPUT_DIR --out OUT_DIR``: score a whole folder of cases (resumable)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .common import add_case_options, add_localizer_arg, add_model_arg, int_in_range


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score", help="score a folder of cases offline (resumable, parallel, Ray optional)",
        description="Score every case under INPUT_DIR into OUT_DIR: cases/<case>.json (full reports), "
        "cells.csv, cases.csv, errors.csv and run.json. Running the same command again skips cases "
        "whose inputs, options and model are unchanged. Exit code 0: all scored; 1: some inputs "
        "failed (see errors.csv); 2: usage error.",
    )
    p.add_argument("input_dir", metavar="INPUT_DIR", help="folder of cases")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="output folder (created if missing)")
    p.add_argument("--case-mode", choices=("subfolder", "image"), default="subfolder",
                   help="subfolder (default): each folder holding images is one case, loose top-level "
                   "images are one-image cases; image: every image is its own case")
    add_case_options(p)
    p.add_argument("--context-file", metavar="CSV", default=None,
                   help="clinical context: a CSV with a 'case' column (the case id, e.g. the subfolder "
                   "name) and one column per context field; empty cells mean not given")
    p.add_argument("--overlays", action="store_true", help="also write overlay pictures under OUT_DIR/overlays/")
    p.add_argument("--workers", type=int_in_range(0), default=None,
                   help="worker processes (default: all cores; 0: score in this process)")
    p.add_argument("--batch-size", type=int_in_range(1), default=1,
                   help="cases handed to a worker at a time (Ray: cases per map_batches batch; default 1)")
    add_model_arg(p)
    add_localizer_arg(p)
    p.add_argument("--force", action="store_true", help="rescore every case, even those already up to date")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default): a process pool on this machine; ray: Ray Data "
                   "(pip install 'morph[distributed]')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="an existing Ray cluster ('auto', 'ray://head:10001'); default: start a local Ray")
    p.set_defaults(func=run)


class _Progress:
    """Renders :class:`morph.batch.BatchProgress` events: a tqdm bar on a terminal,
    plain log lines (every 10 s and at the end) otherwise."""

    def __init__(self, stream: Any = None, interval_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s
        self.bar: Any = None
        self.images = self.cells = self.cases = self.failed = 0
        self.images_todo = self.cases_todo = 0
        self.t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, ev: Any) -> None:
        if ev.kind == "start":
            self.images_todo, self.cases_todo = ev.images_todo, ev.cases_todo
            skipped = ev.cases_total - ev.cases_todo
            self._line(f"{ev.cases_total} case(s) found; {skipped} already up to date; "
                       f"scoring {ev.cases_todo} case(s), {ev.images_todo} image(s)")
            self.t0 = self.last = time.perf_counter()
            if self.tty and ev.images_todo:
                from tqdm import tqdm

                self.bar = tqdm(total=ev.images_todo, unit="img", file=self.stream, dynamic_ncols=True,
                                smoothing=0.1)
        elif ev.kind == "case":
            self.images += ev.images
            self.cells += ev.cells
            self.cases += 1
            self.failed += ev.failed
            now = time.perf_counter()
            rate = self.cells / max(now - self.t0, 1e-9)
            if self.bar is not None:
                self.bar.set_postfix_str(f"{rate:,.0f} cells/s, {self.failed} with errors", refresh=False)
                self.bar.update(ev.images)
            elif now - self.last >= self.interval_s or self.cases == self.cases_todo:
                self.last = now
                el = now - self.t0
                ips = self.images / max(el, 1e-9)
                eta = (self.images_todo - self.images) / ips if ips > 0 else float("nan")
                self._line(f"scored {self.cases}/{self.cases_todo} cases, {self.images}/{self.images_todo} "
                           f"images ({100 * self.images / max(self.images_todo, 1):.0f}%), "
                           f"{ips:.2f} images/s, {rate:,.0f} cells/s, ETA {eta:.0f} s, "
                           f"{self.failed} with errors")
        elif ev.kind == "finish" and self.bar is not None:
            self.bar.close()
            self.bar = None

    def _line(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=self.stream)
        else:
            print(f"morph score: {msg}", file=self.stream, flush=True)


def _summary_table(s: Any) -> str:
    rows = [
        ("cases", f"{s.cases}  (ok {s.cases_ok}, partial {s.cases_partial}, failed {s.cases_failed})"),
        ("this run", f"scored {s.scored}, already up to date {s.skipped}"),
        ("images", f"{s.images_ok} scored, {s.images_failed} failed"),
        ("files not scored", str(s.files_not_scored)),
        ("cells", f"{s.cells} located, {s.cells_counted} counted (not cut by the border)"),
        ("errors.csv rows", str(s.errors)),
        ("duplicates", f"{len(s.duplicates)} group(s) of identical files (each scored)"),
        ("time", f"{s.seconds:.1f} s, {s.images_per_s:.2f} images/s, {s.cells_per_s:,.0f} cells/s"),
        ("outputs", str(s.out_dir)),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    from morph.batch import BatchOptions, run_batch, warm_up
    from morph.errors import MorphError

    from .common import check_output_folder

    if not Path(args.input_dir).is_dir():
        raise MorphError("file_not_found", "the input folder does not exist", path=args.input_dir)
    check_output_folder(args.out, "--out")
    options = BatchOptions(
        case_mode=args.case_mode, um_per_px=args.um_per_px, stain=args.stain,
        context_file=args.context_file, overlays=args.overlays, workers=args.workers,
        batch_size=args.batch_size, force=args.force, engine=args.engine, ray_address=args.ray_address,
        model=args.model, localizer=args.localizer,
    ).validate()
    if args.engine == "ray":
        from morph.batch.ray_engine import import_ray

        import_ray()  # a missing optional dependency is a usage error, before any work
    warm_up(options)  # worker processes import torch while this one loads the model
    summary = run_batch(args.input_dir, args.out, options, progress=_Progress())
    print("morph score: summary")
    print(_summary_table(summary))
    if summary.errors:
        print(f"morph score: {summary.errors} input(s) not scored or failed; see "
              f"{summary.out_dir / 'errors.csv'}", file=sys.stderr)
        return 1
    return 0
