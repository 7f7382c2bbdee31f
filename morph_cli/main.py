"""Entry point of the ``morph`` console script.

Each subcommand lives in its own module with ``register(subparsers)`` and
``run(args) -> int``; modules import heavy libraries inside ``run`` so that
``morph --help`` is instant. Exit codes: 0 success, 1 some inputs failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

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


class _ClosedPipeSafe:
    """A stdout/stderr that survives its reader going away (``morph ... | head``).

    Python ignores SIGPIPE and raises ``BrokenPipeError`` on the next write, which would end
    the command part-way with a traceback (a ``morph score`` run would stop before writing
    its outputs). Here the first broken write points the stream at /dev/null and the command
    finishes its work quietly; what the reader no longer wants is dropped, as with other CLIs.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return int(self._stream.write(text))
            except BrokenPipeError:
                self._drop_from_now_on()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop_from_now_on()

    def _drop_from_now_on(self) -> None:
        self.broken = True
        try:  # the interpreter's last flush at exit then writes to /dev/null, not a dead pipe
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ClosedPipeSafe(sys.stdout), _ClosedPipeSafe(sys.stderr)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = saved


def _main(argv: Sequence[str] | None) -> int:
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
