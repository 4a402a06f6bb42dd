"""The response cache in real runs: a CI rerun sends nothing and scores the same."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from llamabatch import SimServer, arun, load_config
from llamabatch.cli.commands import main
from llamabatch.report import build_report, load_results, render_markdown
from llamabatch.sim import SimProfile, builtin_profile
from tests.helpers import ROOT

KEY = ["model", "prompt_id", "sample"]


def _scores(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out).sort_values(KEY).reset_index(drop=True)
    return df[KEY + ["output_text"] + [c for c in df.columns if c.startswith("score_")]]


@pytest.mark.slow
@pytest.mark.anyio
async def test_ci_eval_rerun_with_a_cache_sends_nothing_and_scores_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    config = load_config("configs/ci-eval.toml")
    profiles = {
        m.model: SimProfile.from_mapping(m.sim, builtin_profile(m.model)) for m in config.models
    }
    cache = tmp_path / "cache.sqlite3"
    async with SimServer(profiles=profiles) as sim:
        models = tuple(dataclasses.replace(m, base_url=sim.base_url) for m in config.models)
        config = dataclasses.replace(config, models=models)
        first = await arun(config, output=tmp_path / "first", cache=cache)
        sent = sim.stats.requests
        assert sent == first.ok == 126
        second = await arun(config, output=tmp_path / "second", cache=cache)
        assert sim.stats.requests == sent  # zero requests the second time
        assert second.ok == 126 and second.exit_code == 0
        refreshed = await arun(config, output=tmp_path / "third", cache=cache, cache_refresh=True)
        assert sim.stats.requests == 2 * sent and refreshed.ok == 126
    pd.testing.assert_frame_equal(_scores(tmp_path / "first"), _scores(tmp_path / "second"))
    rows = pd.read_parquet(tmp_path / "second")
    assert rows["cached"].all() and (rows["attempts"] == 0).all()
    assert rows["latency_s"].notna().all()  # the original measurements stay in the rows
    assert not pd.read_parquet(tmp_path / "third")["cached"].any()
    markdown = render_markdown(build_report(load_results([tmp_path / "second"])))
    assert "| cached |" in markdown.replace("cached | TTFT", "cached |")
    assert "left out of TTFT and latency" in markdown


@pytest.mark.slow
def test_the_in_process_simulator_hits_the_cache_across_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    cache = str(tmp_path / "c.sqlite3")
    args = ["run", "configs/quickstart.toml", "--limit", "4", "--cache", cache]
    assert main([*args, "-o", str(tmp_path / "a"), "-q"]) == 0
    assert main([*args, "-o", str(tmp_path / "b")]) == 0  # a new simulator, on a new port
    out = capsys.readouterr().out
    assert "cached" in out.splitlines()[0]
    rows = pd.read_parquet(tmp_path / "b")
    assert rows["cached"].all() and len(rows) == 12
    summary_line = next(line for line in out.splitlines() if line.startswith("maverick"))
    assert summary_line.split()[1:5] == ["4", "4", "0", "4"]  # rows, ok, errors, cached
    assert "-" in summary_line.split()[5]  # TTFT p50 not shown for cached rows
