"""The report's inter-chunk gap table, from rows run with `[run] chunk_times = true`."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabatch import SimProfile, SimServer, arun
from llamabatch.report.resultset import load_results
from llamabatch.report.tables import build_report, render_markdown
from tests.helpers import sim_config

pytestmark = pytest.mark.anyio
# 10 ms between tokens, nothing else: the gaps' median is the server's pace.
PACED = SimProfile(ttft_s=0.0, tokens_per_s=100.0, output_tokens=6, jitter=0.0)


async def run(tmp_path: Path, *, chunk_times: bool) -> Path:
    async with SimServer(default=PACED) as sim:
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=8, models=("a", "b"), run={"chunk_times": chunk_times}
        )
        await arun(config)
    return config.output


async def test_gap_distribution_per_model(tmp_path: Path) -> None:
    report = build_report(load_results([await run(tmp_path, chunk_times=True)]))
    assert report.itl is not None
    table = report.itl.set_index("model")
    assert list(table.index) == ["a", "b"] and (table["rows"] == 8).all()
    assert (table["gaps"] > 8).all()
    assert (table["p50_s"] <= table["p90_s"]).all() and (table["p90_s"] <= table["p99_s"]).all()
    assert table["p50_s"].between(0.005, 0.05).all()
    assert table["tokens_per_chunk"].isna().all()
    markdown = render_markdown(report)
    assert "## Inter-chunk gaps (raw chunk times)" in markdown
    assert "| a | 8 |" in markdown


async def test_no_gap_table_without_chunk_times(tmp_path: Path) -> None:
    report = build_report(load_results([await run(tmp_path, chunk_times=False)]))
    assert report.itl is None
    assert "Inter-chunk" not in render_markdown(report)
