"""Embeddings in bulk: memory while N inputs x D dims are embedded and written, and the pace.

    python benchmarks/embed_memory.py                       # 1,000,000 inputs x 768 dims
    python benchmarks/embed_memory.py --inputs 20000        # a smoke run

The simulator runs as its own process (`llamabatch sim --embedding-dims D`), the
run as another (`llamabatch run`, `task = "embed"`, 64 inputs a request). The
run's resident memory (VmRSS) is sampled every few seconds beside the rows
already in Parquet parts, so a reader sees whether memory grows with the rows
written; the manifest gives the run's peak (VmHWM). Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

PY = sys.executable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--every-s", type=float, default=10.0, help="memory sample interval")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        print(measure(args.keep, args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(measure(Path(tmp), args))


def write_inputs(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"d{i}", "text": f"Document {i}: notes on llamas."}) + "\n")


def rss_mb(pid: int) -> float:
    """Resident memory now (VmRSS), in MB; nan once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def stored_rows(output: Path) -> int:
    rows = 0
    for part in output.glob("part-*.parquet"):
        try:
            rows += pq.read_metadata(part).num_rows
        except OSError:
            continue  # renamed into place meanwhile
    return rows


def measure(tmp: Path, args: argparse.Namespace) -> str:
    n, dims = args.inputs, args.dims
    inputs, out = tmp / "inputs.jsonl", tmp / "out"
    write_inputs(inputs, n)
    sim_argv = ["sim", "--port", "0", "--ttft-s", "0", "--embedding-dims", str(dims)]
    sim = subprocess.Popen(
        [PY, "-m", "llamabatch.cli", *sim_argv],
        stdout=subprocess.PIPE,
        text=True,
    )
    samples: list[tuple[float, int, float]] = []
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().split()[3]
        config = tmp / "run.toml"
        config.write_text(
            f'[run]\ninput = "{inputs}"\noutput = "{out}"\n'
            f"[engine]\nconcurrency = {args.concurrency}\n"
            f'[[models]]\nname = "e"\nprovider = "openai"\nmodel = "e"\nbase_url = "{url}"\n'
            'task = "embed"\nbatch_inputs = 64\n'
        )
        started = time.monotonic()
        run = subprocess.Popen([PY, "-m", "llamabatch.cli", "run", str(config), "-q"])
        while run.poll() is None:
            time.sleep(args.every_s)
            samples.append((time.monotonic() - started, stored_rows(out), rss_mb(run.pid)))
        wall = time.monotonic() - started
    finally:
        sim.terminate()
        sim.wait()
    manifest = json.loads((out / "_manifest.json").read_text())
    first = pq.ParquetFile(next(out.glob("part-*.parquet")))
    vectors = first.read_row_group(0, columns=["embedding", "dimensions"])
    assert set(vectors["dimensions"].to_pylist()) == {dims}, "a vector of the wrong length"
    size_mb = sum(p.stat().st_size for p in out.glob("part-*.parquet")) / 2**20
    lines = [
        f"Embeddings: {n:,} inputs x {dims} dims, 64 inputs a request, concurrency "
        f"{args.concurrency}; `llamabatch sim --ttft-s 0` in its own process. Exit code "
        f"{run.returncode}, rows {manifest['counts']}, {wall:.0f} s "
        f"({n / wall:,.0f} inputs/s), Parquet parts {size_mb:,.0f} MB.",
        "",
        "| seconds | rows in parts | run's RSS MB |",
        "|---:|---:|---:|",
    ]
    shown = samples[:: max(1, len(samples) // 12)]  # about a dozen lines, and the last
    if samples and shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    lines += [
        f"| {at:.0f} | {rows:,} | {'(exited)' if rss != rss else f'{rss:.0f}'} |"
        for at, rows, rss in shown
    ]
    lines += ["", f"Peak RSS of the run (VmHWM): **{manifest['client']['max_rss_mb']:.0f} MB**"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
