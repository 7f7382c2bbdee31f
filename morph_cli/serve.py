"""``morph serve``: run the web service (API + review page) with uvicorn."""

from __future__ import annotations

import argparse
import os

from .common import int_in_range


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve", help="run the HTTP API and review page",
        description="Run the morph web service: the /v1 API, the review page at /, health and "
        "Prometheus metrics. Other settings come from MORPH_* environment variables (see README).",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int_in_range(1, 65535, "port"), default=8000, help="port (default: 8000)")
    p.add_argument("--workers", type=int_in_range(1, what="workers"), default=1,
                   help="worker processes, each with its own copy of the model (default: 1)")
    p.add_argument("--model", default=None, metavar="DIR|shipped|none",
                   help="classifier folder path or name, 'shipped' or 'none' (sets MORPH_MODEL; "
                   "default: the shipped model)")
    p.add_argument("--localizer", default=None, metavar="DIR|shipped|none",
                   help="centre-map localizer folder path or name, 'shipped' or 'none' (sets "
                   "MORPH_LOCALIZER; default: the shipped locnet-v1)")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"), help="uvicorn log level")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    if args.model:
        os.environ["MORPH_MODEL"] = args.model  # read by every worker's Settings()
    if args.localizer:
        os.environ["MORPH_LOCALIZER"] = args.localizer
    uvicorn.run(
        "service.app:app", host=args.host, port=args.port, workers=args.workers,
        log_level=args.log_level, proxy_headers=False,
    )
    return 0
