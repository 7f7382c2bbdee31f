"""Entry point of the ``morph`` console script.

Each subcommand lives in its own module with ``register(subparsers)`` and
``run(args) -> int``; modules import heavy libraries inside ``run`` so that
``morph --help`` is instant. Exit codes: 0 success, 1 some inputs failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

SUBCOMMANDS: tuple[str, ...] = ("analyze", "diagnose", "evaluate", "train", "score", "serve", "store")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="morph",
        description="Blood-smear morphology: locate and classify cells, then rank differentials "
        "(decision support, not a diagnosis).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"morph_cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"morph_cli.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from morph.errors import MorphError

    try:
        return int(args.func(args))
    except MorphError as exc:
        print(f"morph {args.command}: error: {exc}", file=sys.stderr)
        return 2 if exc.code in ("bad_request", "bad_config", "bad_context", "file_not_found") else 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
