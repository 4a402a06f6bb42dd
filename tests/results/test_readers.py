"""A results directory reads whole with the README's one line in pandas, polars and DuckDB:
while a run goes on, after it was killed with SIGKILL, and once it has finished."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import duckdb
import pandas as pd
import polars as pl
import pytest

from llamabatch import SimProfile, SimServer, arun, run
from llamabatch.cli.commands import main
from llamabatch.report.resultset import load_results
from llamabatch.results import part_files
from llamabatch.results.journal import JOURNAL_DIR
from tests.helpers import ROOT, prompt_rows, sim_config, write_jsonl

pytestmark = pytest.mark.anyio
KEY = ["model", "prompt_id", "sample"]
SLOW = SimProfile(ttft_s=0.05, tokens_per_s=100.0, output_tokens=5, jitter=0.0)


def read_three(output: Path) -> dict[str, pd.DataFrame]:
    """The README's lines (section Results), each library as documented."""
    return {
        "pandas": pd.read_parquet(output),
        "polars": pl.read_parquet(f"{output}/*.parquet").to_pandas(),
        "duckdb": duckdb.sql(f"SELECT * FROM '{output}/*.parquet'").df(),
    }


def check_whole(frames: dict[str, pd.DataFrame], rows: int | None = None) -> int:
    """Every reader sees the same rows, one per key; returns how many."""
    counts = {name: len(df) for name, df in frames.items()}
    assert len(set(counts.values())) == 1, counts
    for df in frames.values():
        assert not df.duplicated(KEY).any()
        assert set(KEY) | {"status", "output_text"} <= set(df.columns)
    (count,) = set(counts.values())
    if rows is not None:
        assert count == rows
    return count


async def wait_for_parts(output: Path) -> None:
    with anyio.fail_after(60):
        while not part_files(output):
            await anyio.sleep(0.05)  # polling a directory another writer fills


def test_committed_baseline_reads_with_all_three() -> None:
    check_whole(read_three(ROOT / "results/baseline-ci-eval"), rows=126)


async def test_readers_see_progress_while_a_run_goes_on(tmp_path: Path) -> None:
    n = 80
    async with SimServer(default=SLOW) as sim:
        config = sim_config(
            tmp_path,
            sim.base_url,
            n_prompts=n,
            engine={"concurrency": 2, "part_interval_s": 0.5},
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(arun, config)
            await sim.wait_for_requests(4)
            await wait_for_parts(config.output)
            assert (config.output / JOURNAL_DIR).is_dir()  # still running, journal beside parts
            frames = read_three(config.output)
            # Parts are only added while a run goes on: a later reader sees as many or more.
            seen = [len(frames[name]) for name in ("pandas", "polars", "duckdb")]
            assert 0 < seen[0] <= seen[1] <= seen[2] < n, seen
        check_whole(read_three(config.output), rows=n)


@pytest.mark.slow
async def test_a_killed_run_leaves_parts_every_reader_reads(tmp_path: Path) -> None:
    n = 120
    async with SimServer(default=SLOW) as sim:
        prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(n))
        config = tmp_path / "run.toml"
        config.write_text(
            f'[run]\ninput = "{prompts}"\noutput = "{tmp_path / "out"}"\n'
            "[engine]\nconcurrency = 2\n"  # the default part cadence: the first part after 1 s
            f'[[models]]\nname = "m"\nprovider = "openai"\nmodel = "m"\n'
            f'base_url = "{sim.base_url}"\n'
        )
        argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q"]
        process = await anyio.open_process(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        async with process:
            await wait_for_parts(tmp_path / "out")
            process.kill()
            await process.wait()
        sent = sim.stats.requests
    out = tmp_path / "out"
    assert (out / JOURNAL_DIR).is_dir() and (out / "_manifest.json").is_file()
    stored = check_whole(read_three(out))
    assert 0 < stored <= sent < n


def test_a_results_directory_inside_another_is_not_read_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outer = tmp_path / "out"
    for name, n, output in (("inner", 5, outer / "inner"), ("outer", 3, outer)):
        write_jsonl(tmp_path / f"{name}.jsonl", prompt_rows(n))
        (tmp_path / f"{name}.toml").write_text(
            f'[run]\ninput = "{tmp_path / name}.jsonl"\noutput = "{output}"\n[[models]]\n'
            'name = "m"\nprovider = "sim"\nsim = { ttft_s = 0.0, tokens_per_s = 0.0 }\n'
        )
        assert main(["run", str(tmp_path / f"{name}.toml")]) == 0
    # The layout: a directory's rows are its own part-*.parquet files; a folder is another's.
    *_, row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("m ")]
    assert row.split()[1:4] == ["3", "3", "0"]  # the end-of-run summary: rows, ok, errors
    assert len(load_results([outer]).frame) == 3
    assert len(run(tmp_path / "outer.toml").dataframe()) == 3  # resumed: nothing to send
