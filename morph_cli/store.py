"""``morph store export --store DIR --out OUT``: the reviewed cells of a case store as training data."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from morph.store import CaseStore


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "store", help="the case store of the service (MORPH_STORE_DIR): export reviewed cells, migrate",
        description="Work with a case store written by the service (MORPH_STORE_DIR).",
    )
    actions = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    ex = actions.add_parser(
        "export", help="write the reviewed cells as OUT/annotations.csv + OUT/images/ (the 'csv' format)",
        description="Write every reviewed cell (image,x,y,label plus 'confirmed': 1 when the reviewer "
        "agreed with the model, 0 when corrected) to OUT/annotations.csv with the images in OUT/images/; "
        "`morph train` (format csv, see training/configs/finetune-lab.yaml) and `morph evaluate --format "
        "csv` read it.",
    )
    _store_args(ex)
    ex.add_argument("--out", required=True, help="output folder")
    ex.set_defaults(func=run_export)
    mg = actions.add_parser("migrate", help="create or upgrade the store's database schema (Alembic)")
    _store_args(mg)
    mg.set_defaults(func=run_migrate)


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="the store folder (MORPH_STORE_DIR of the service)")
    p.add_argument("--database-url", default=None,
                   help="the store's database URL when it is not the SQLite file in --store (MORPH_DATABASE_URL)")


def _open(args: argparse.Namespace) -> CaseStore:
    from pathlib import Path

    from morph.errors import MorphError
    from morph.store import CaseStore

    if args.database_url is None and not Path(args.store).is_dir():
        raise MorphError("file_not_found", "no such store folder", path=args.store)
    return CaseStore(args.store, args.database_url)


def run_export(args: argparse.Namespace) -> int:
    from morph.store import export_reviewed

    store = _open(args)
    try:
        summary = export_reviewed(store, args.out)
    finally:
        store.close()
    print(f"{summary.cells} reviewed cells ({summary.confirmed} confirmed, {summary.corrected} corrected) from "
          f"{summary.cases} case(s), {summary.images} image(s), written to {summary.out}")
    for label, n in summary.per_class.items():
        print(f"  {label:<28} {n}")
    scales = ", ".join(f"{v:g}" for v in summary.um_per_px)
    print(f"field scale(s): {scales} um/px (give it as um_per_px in the training config and --um-per-px "
          "to morph evaluate)")
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    store = _open(args)
    store.close()
    print(f"the store's database is at the newest schema ({store.url.split('://', 1)[0]})")
    return 0
