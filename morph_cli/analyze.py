"""``morph analyze IMAGE...``: one case made of one or more fields."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    add_case_options,
    add_localizer_arg,
    add_model_arg,
    check_inputs_exist,
    check_output_file,
    expand_images,
    print_case_summary,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "analyze", help="locate and classify cells in one case (one or more fields)",
        description="Analyse one case made of one or more smear fields: locate and classify every "
        "cell, then compute findings and ranked differentials. Folders are expanded to their images.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (or folders of images)")
    add_case_options(p)
    p.add_argument("--context", metavar="C.json", default=None, help="clinical context JSON file")
    p.add_argument("--overlay", metavar="OUT.png", default=None,
                   help="write an overlay picture (one per field: OUT-<name>.png when several)")
    p.add_argument("--json", metavar="OUT.json", default=None, help="write the JSON report")
    add_model_arg(p)
    add_localizer_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from morph.context import read_context_file
    from morph.errors import MorphError
    from morph.io import write_image, write_json
    from morph.pipeline import AnalysisOptions, build_analyzer

    check_inputs_exist(args.images)
    check_output_file(args.json, "--json")
    check_output_file(args.overlay, "--overlay")
    context = read_context_file(args.context) if args.context else None
    options = AnalysisOptions(um_per_px=args.um_per_px, stain=args.stain, context=context).validate()
    paths = expand_images(args.images)
    if not paths:
        raise MorphError("bad_request", "no image files found in the given paths", path=" ".join(args.images))
    analyzer = build_analyzer(args.model, args.localizer)
    result = analyzer.run_case([str(p) for p in paths], options, overlays=bool(args.overlay))
    report = result.report
    data = report.to_dict()
    print_case_summary(data)
    if args.json:
        write_json(args.json, data)
        print(f"report written to {args.json}")
    if args.overlay:
        out = Path(args.overlay)
        drawn = [(f, pic) for f, pic in zip(report.images, result.overlays, strict=True) if pic is not None]
        for f, pic in drawn:
            target = out if len(drawn) == 1 else out.with_name(f"{out.stem}-{Path(f.path).stem}{out.suffix or '.png'}")
            write_image(target, pic)
            print(f"overlay written to {target}")
    failed = [f for f in report.images if f.error is not None]
    if failed:
        print(f"{len(failed)} of {len(report.images)} field(s) could not be analysed", file=sys.stderr)
        return 1
    return 0
