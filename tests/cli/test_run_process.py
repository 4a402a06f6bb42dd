"""What a run's process costs beyond its requests: start-up imports, garbage collection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from llamabatch.runs.gcsetting import SWITCH_INTERVAL_S
from tests.helpers import prompt_rows, write_jsonl

# The parent runs the CLI in a fresh interpreter and says which heavy modules it loaded.
_CHILD = """
import gc, json, sys
from llamabatch.cli import commands
seen = []
before = (gc.get_threshold(), sys.getswitchinterval())
call_run = commands._call_run
def spy(*args):
    seen.append((gc.get_threshold(), sys.getswitchinterval()))
    return call_run(*args)
commands._call_run = spy
code = commands.main(["run", sys.argv[1], *sys.argv[2:]])
heavy = ("pandas", "pyarrow.compute", "tqdm")
print(json.dumps({
    "exit": code,
    "loaded": [m for m in heavy if m in sys.modules],
    "gc_during": seen[0],
    "gc_before": before,
    "gc_after": (gc.get_threshold(), sys.getswitchinterval()),
}))
"""


def _run(tmp_path: Path, *flags: str) -> dict[str, object]:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(12))
    config = tmp_path / "config.toml"
    config.write_text(
        f'[run]\nname = "t"\ninput = "{prompts}"\noutput = "{tmp_path / "out"}"\n'
        '[[models]]\nname = "m"\nprovider = "sim"\nmodel = "x"\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(config), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_quiet_chat_run_loads_no_pandas_arrow_compute_or_tqdm(tmp_path: Path) -> None:
    # (Without -q, the summary table at the end reads the results with pandas.)
    result = _run(tmp_path, "-q")
    assert (result["exit"], result["loaded"]) == (0, [])
    # ...and its part holds every row with the schema's types (timestamps, null vectors).
    table = pq.read_table(tmp_path / "out")
    assert table.num_rows == 12
    assert str(table.schema.field("started_at").type) == "timestamp[us, tz=UTC]"
    assert table.schema.field("embedding").type.value_type.bit_width == 32
    assert table["embedding"].null_count == 12
    assert all(t.year >= 2024 for t in table["finished_at"].to_pylist())


def test_a_run_tunes_gc_and_the_switch_interval_and_restores_them(tmp_path: Path) -> None:
    result = _run(tmp_path, "-q")
    assert result["exit"] == 0
    (young, *_), switch = result["gc_during"]  # type: ignore[misc]
    assert young >= 10_000 and switch == SWITCH_INTERVAL_S
    assert result["gc_after"] == result["gc_before"]  # thresholds and switch interval
