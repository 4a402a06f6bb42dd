"""`llamabatch batches RESULTS [--cancel]`: the batches of a batch-mode run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llamabatch.errors import EXIT_OK

COLUMNS = ("chunk", "model", "batch_id", "requests", "state", "completed", "failed")


def add_batches_command(commands: Any) -> None:
    batches = commands.add_parser(
        "batches",
        help="list the batches of a batch-mode run, or cancel those in flight",
        description="List the Batch API batches of the run in RESULTS from its batch log: "
        "model, batch id, requests, last known state and counts. With --cancel, cancel "
        "those still in flight (the next run records their unanswered rows as cancelled "
        "errors, and the run after that sends them again).",
    )
    batches.add_argument("results", type=Path, help="results directory")
    batches.add_argument("--cancel", action="store_true", help="cancel the batches in flight")
    batches.set_defaults(handler=_batches)


def _batches(args: argparse.Namespace) -> int:
    import anyio

    from llamabatch.runs.batchadmin import batch_rows, cancel_batches

    if args.cancel:
        for chunk, outcome in anyio.run(cancel_batches, args.results):
            print(f"{chunk}: {outcome}")
        return EXIT_OK
    cells = [list(COLUMNS)] + [[str(r[c]) for c in COLUMNS] for r in batch_rows(args.results)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    for n, row in enumerate(cells):
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    return EXIT_OK
