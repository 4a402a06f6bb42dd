"""`llamabatch view`: serve the local results browser."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any

from llamabatch.cli.evaluate import results_location
from llamabatch.errors import UsageError
from llamabatch.view.address import DEFAULT_HOST, DEFAULT_PORT

DEFAULT_ROOT = Path("results")


def add_view_command(commands: Any) -> None:

    view = commands.add_parser(
        "view",
        help="browse results in a local web app (runs, rows, prompts, comparisons)",
        description="Serve a local web app over the runs in RESULTS (each a results "
        "directory or a folder of them; default: the runs under results/): every run's "
        "tables and charts, its rows with filters and search, each prompt's outputs side by "
        "side, two runs compared (regressions first), reports across runs, and runs still in "
        "progress as they are stored. Only the given directories are served; it listens on "
        "127.0.0.1 unless told otherwise. Ctrl-C stops it.",
    )
    view.add_argument(
        "results",
        type=results_location,
        nargs="*",
        metavar="RESULTS",
        help="results directories (or URIs such as s3://bucket/run)",
    )
    view.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default: {DEFAULT_HOST})"
    )
    view.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"0 picks a free port (default: {DEFAULT_PORT})",
    )
    view.add_argument("--no-browser", action="store_true", help="do not open a browser")
    view.set_defaults(handler=_view)


def _view(args: argparse.Namespace) -> int:
    import webbrowser

    import anyio

    from llamabatch.view.server import serve

    roots = args.results or [DEFAULT_ROOT]
    if not args.results and not DEFAULT_ROOT.is_dir():
        raise UsageError("no results/ directory here: give the results directories to view")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"llamabatch: warning: serving on {args.host}: anyone who can reach it can read "
            "these results",
            file=sys.stderr,
        )

    def ready(url: str) -> None:
        print(f"llamabatch view: serving {url}  (Ctrl-C to stop)", flush=True)
        if not args.no_browser:
            webbrowser.open(url)

    try:
        anyio.run(functools.partial(serve, roots, host=args.host, port=args.port, ready=ready))
    except KeyboardInterrupt:
        return 0
    return 0
