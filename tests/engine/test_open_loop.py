"""Open-loop load (request_rate), SLOs and goodput, and `llamabatch sweep`."""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from pathlib import Path

import pandas as pd
import pytest

from llamabatch import EngineConfig, SimServer, arun
from llamabatch.cli.commands import main
from llamabatch.engine.engine import _arrivals
from llamabatch.report.summary import summarize
from llamabatch.runs.sweep import Level, render, sweep
from tests.helpers import FAST, sim_config

pytestmark = pytest.mark.anyio


def test_poisson_arrivals_have_the_target_mean_and_are_reproducible() -> None:
    engine = EngineConfig(request_rate=20.0, arrival="poisson", arrival_seed=7)
    first, again = _arrivals(engine, 0), _arrivals(engine, 0)
    assert first is not None and again is not None
    a = [next(first) for _ in range(2001)]
    b = [next(again) for _ in range(2001)]
    gaps = [y - x for x, y in itertools.pairwise(a)]
    assert gaps == pytest.approx([y - x for x, y in itertools.pairwise(b)])
    assert statistics.mean(gaps) == pytest.approx(1 / 20, rel=0.1)
    assert statistics.pstdev(gaps) == pytest.approx(1 / 20, rel=0.15)  # exponential: sd = mean


async def test_constant_rate_open_loop_records_scheduled_times(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=20, engine={"concurrency": 4})
        config = dataclasses.replace(
            config,
            engine=dataclasses.replace(config.engine, request_rate=50.0, arrival="constant"),
        )
        result = await arun(config)
    df = result.dataframe().sort_values("scheduled_at")
    gaps = df["scheduled_at"].diff().dt.total_seconds().dropna()
    assert gaps.tolist() == pytest.approx([0.02] * 19, abs=0.003)
    assert (df["started_at"] >= df["scheduled_at"]).all()
    table = summarize(df)
    assert table.loc[0, "sent_req_s"] == pytest.approx(50, rel=0.2)


def test_slo_share_and_goodput() -> None:
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    df = pd.DataFrame(
        {
            "model": ["m"] * 4,
            "status": ["ok", "ok", "ok", "error"],
            "ttft_s": [0.1, 0.2, 0.9, None],
            "latency_s": [1.0, 1.0, 1.0, 0.5],
            "decode_tps": [100.0, 100.0, 100.0, None],
            "completion_tokens": [10, 10, 10, None],
            "started_at": [t0, t0, t0, t0],
            "finished_at": [t0 + pd.Timedelta(seconds=s) for s in (1, 1, 1, 2)],
        }
    )
    table = summarize(df, slo={"ttft_s": 0.5, "tpot_s": 0.02})
    assert table.loc[0, "slo_pct"] == 50.0
    assert table.loc[0, "goodput_req_s"] == pytest.approx(1.0)  # 2 good rows over 2 s


async def test_sweep_finds_the_highest_level_meeting_the_slo(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=8)
        config = dataclasses.replace(config, slo={"latency_s": 30.0, "attainment": 0.9})
        levels = [Level("concurrency", 1), Level("concurrency", 4)]
        table = await sweep(config, levels, tmp_path / "sweep")
    assert set(table["level"]) == {"concurrency 1", "concurrency 4"}
    assert (table["slo_pct"] == 100.0).all()
    text = render(table, dict(config.slo))
    assert "- m1: concurrency 4" in text
    assert (tmp_path / "sweep" / "concurrency-4").is_dir()


def test_sweep_needs_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[run]\ninput = "x.jsonl"\n[[models]]\nname = "a"\nprovider = "sim"\n')
    with pytest.raises(SystemExit) as info:
        main(["sweep", str(config)])
    assert info.value.code == 2
    assert main(["sweep", str(config), "--rates", "0,2"]) == 2
    assert "positive" in capsys.readouterr().err
