"""`llamabatch view` on a 1,000,000-row run: rows-page answer times and the server's memory.

    python benchmarks/view_rows.py              # 1,000,000 rows (about 2 minutes)
    python benchmarks/view_rows.py --rows 20000 # a smoke run

Writes a run the way `llamabatch run` does (Parquet parts of 5,000 rows, zstd,
the result schema with a score column and an output text of ~200 characters per
row), starts `llamabatch view` on it, and times each request from send to last
byte, `--repeats` times (the first, cold, answer separately). Peak RSS is the
server's VmHWM after every rows request was answered; the run page (a report over
every row) is timed after that, and the peak RSS again. Prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from llamabatch.results import result_schema, write_manifest
from llamabatch.results.parts import part_path, store_part
from llamabatch.results.schema import scoring_fields

MODELS = ("maverick", "scout", "llama-3.3-70b")
PART_ROWS = 5000
VOCABULARY = """
the a llama model answer token stream batch latency prompt result value run of to and
is in that it for on with as was at by this be are from or have an they which one you
all were her she there would their we him been has when who will more no if out so
said what up its about into than them can only other new some could time these two
may then do first any my now such like our over man me even most made after also did
"""
WORDS = np.array(VOCABULARY.split(), dtype=object)
NEEDLE = "zanzibar"  # in a few outputs only: what a search is for


def make_run(out: Path, rows: int, seed: int = 0) -> None:
    """`rows` result rows in parts of 5,000, written like a finished run."""
    rng = np.random.default_rng(seed)
    schema = result_schema(derived=scoring_fields(["exact"]))
    started = datetime(2026, 1, 1, tzinfo=UTC)
    for seq, start in enumerate(range(0, rows, PART_ROWS)):
        n = min(PART_ROWS, rows - start)
        index = np.arange(start, start + n)
        words = WORDS[rng.integers(0, len(WORDS), size=(n, 36))]
        texts = [" ".join(w) for w in words]
        for i in np.flatnonzero(rng.random(n) < 0.0005):
            texts[i] += f" {NEEDLE}"
        failed = rng.random(n) < 0.02
        latency = rng.lognormal(0.0, 0.4, n)
        columns = {
            "run_id": ["bench"] * n,
            "model": [MODELS[i % 3] for i in index],
            "provider": ["openai"] * n,
            "model_id": [MODELS[i % 3] for i in index],
            "prompt_id": [f"p{i // 3:07d}" for i in index],
            "sample": np.zeros(n, np.int32),
            "status": np.where(failed, "error", "ok"),
            "error_type": [("server" if f else None) for f in failed],
            "attempts": np.ones(n, np.int32),
            "output_text": [None if f else t for f, t in zip(failed, texts, strict=True)],
            "usage_source": ["server"] * n,
            "queue_s": np.zeros(n),
            "ttft_s": latency / 4,
            "latency_s": latency,
            "completion_tokens": rng.integers(20, 60, n),
            "started_at": pa.array([started] * n, pa.timestamp("us", tz="UTC")),
            "finished_at": pa.array([started] * n, pa.timestamp("us", tz="UTC")),
            "request_params": ["{}"] * n,
            "score_exact": np.where(failed, np.nan, (rng.random(n) < 0.8).astype(float)),
        }
        arrays = [
            pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
            for f in schema
        ]
        store_part(pa.Table.from_arrays(arrays, schema=schema), part_path(out, "bench", seq))
    write_manifest(
        out,
        {
            "run_id": "bench",
            "name": "bench",
            "status": "finished",
            "started_at": started.isoformat(),
            "config": {"models": [{"name": m} for m in MODELS]},
        },
    )


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        response.read()
        assert response.status == 200
    return time.perf_counter() - started


PAGES = (
    ("first page", "rows"),
    ("model + status filter", "rows?model=scout&status=error"),
    ("score filter", "rows?model=maverick&score=exact&verdict=fail"),
    ("page 1,000 (row 50,001)", "rows?page=1000"),
    ("search in outputs", f"rows?q={NEEDLE}"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "big"
        run.mkdir()
        started = time.perf_counter()
        make_run(run, args.rows)
        print(f"wrote {args.rows:,} rows in {time.perf_counter() - started:.0f}s", file=sys.stderr)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llamabatch.cli",
                "view",
                str(run),
                "--port",
                "0",
                "--no-browser",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            base = server.stdout.readline().split()[3] + "run/big/"
            lines = [
                f"`llamabatch view` on {args.rows:,} rows ({args.rows // PART_ROWS} parts); "
                f"seconds from request to last byte, first (cold) answer and median of the "
                f"next {args.repeats - 1}:",
                "",
                "| page | first | median |",
                "|---|---:|---:|",
            ]
            for label, path in PAGES:
                times = [timed_get(base + path) for _ in range(args.repeats)]
                median = statistics.median(times[1:]) if len(times) > 1 else times[0]
                lines.append(f"| {label} | {times[0]:.3f} | {median:.3f} |")
            lines += [
                "",
                f"Server peak RSS (VmHWM) after the rows pages: {rss_peak_mb(server.pid):.0f} MB",
            ]
            # The run page is a whole report (every row's numbers, not its texts): not the
            # rows page's budget, measured apart so its cost is known.
            took = timed_get(base.rstrip("/"))
            lines += [
                f"Run page (the report of the whole run, cold): {took:.1f} s; "
                f"peak RSS after it: {rss_peak_mb(server.pid):.0f} MB",
            ]
            print("\n".join(lines))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
