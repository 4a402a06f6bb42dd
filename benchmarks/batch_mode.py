"""Batch mode at scale: time to submit and to collect N rows on the simulator, and peak memory.

    python benchmarks/batch_mode.py              # 100,000 prompts
    python benchmarks/batch_mode.py --prompts 2000

The simulator runs as its own process (`llamabatch sim`), the run as another
(`llamabatch run --batch`); the run's manifest gives its start, end and peak
memory (VmHWM), its batch log the time each batch was created and collected.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

PY = sys.executable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        print(measure(args.keep, args.prompts))
        return
    with tempfile.TemporaryDirectory() as tmp:
        print(measure(Path(tmp), args.prompts))


def measure(tmp: Path, n: int) -> str:
    prompts = tmp / "prompts.jsonl"
    with prompts.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"p{i}", "prompt": f"Summarise item number {i}."}) + "\n")
    sim = subprocess.Popen(
        [PY, "-m", "llamabatch.cli", "sim", "--port", "0", "--output-tokens", "40"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sim.stdout is not None
        url = sim.stdout.readline().split()[3]
        config = tmp / "run.toml"
        config.write_text(
            f'[run]\ninput = "{prompts}"\noutput = "{tmp / "out"}"\nmode = "batch"\n'
            "[engine]\nbatch_poll_s = 0.5\nbatch_poll_max_s = 2\n"
            f'[[models]]\nname = "m"\nprovider = "openai"\nmodel = "m"\nbase_url = "{url}"\n'
        )
        started = time.monotonic()
        subprocess.run([PY, "-m", "llamabatch.cli", "run", str(config), "-q"], check=False)
        wall = time.monotonic() - started
    finally:
        sim.terminate()
        sim.wait()
    manifest = json.loads((tmp / "out" / "_manifest.json").read_text())
    events = [json.loads(line) for line in (tmp / "out" / "_batches" / "log.jsonl").open()]
    t0 = datetime.fromisoformat(manifest["started_at"]).timestamp()
    created = max(e["at"] for e in events if e["event"] == "created") - t0
    terminal = max(e["at"] for e in events if e["event"] == "status") - t0
    collected = max(e["at"] for e in events if e["event"] == "collected") - t0
    chunks = sum(e["event"] == "prepared" for e in events)
    return (
        f"batch mode, {n:,} prompts in {chunks} request files, simulator in its own process:\n"
        f"  all batches created {created:.1f} s after the run started\n"
        f"  last batch finished (seen by a poll) at {terminal:.1f} s; "
        f"all rows collected at {collected:.1f} s\n"
        f"  whole run {wall:.1f} s (process start to exit); rows {manifest['counts']}\n"
        f"  peak memory of the run {manifest['client']['max_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
