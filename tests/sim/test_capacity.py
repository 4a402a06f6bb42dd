"""The simulator behaves like a loaded GPU server: slots, prefill, a shared decode throughput.

Every figure is read from llamabatch's own rows (real HTTP to the simulator), with
margins wide enough for a loaded 2-core machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import openai
import pandas as pd
import pytest

from llamabatch import SimProfile, SimServer, arun
from llamabatch.runs.sweep import Level, render, sweep
from tests.helpers import FAST, prompt_rows, sim_config, write_jsonl

pytestmark = pytest.mark.anyio
# Ten tokens a reply (max_tokens cuts the long draw), 20 tokens/s alone: 0.45 s of decoding.
STEADY = SimProfile(ttft_s=0.0, tokens_per_s=20.0, output_tokens=200, jitter=0.0)
TEN = {"max_tokens": 10}


async def rows(tmp_path: Path, profile: SimProfile, n: int, concurrency: int) -> pd.DataFrame:
    async with SimServer(default=profile) as sim:
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=n, engine={"concurrency": concurrency}
        )
        config = dataclasses.replace(config, defaults=TEN)
        result = await arun(config)
    df = result.dataframe()
    assert (df["status"] == "ok").all() and (df["completion_tokens"] == 10).all()
    return df


async def test_requests_beyond_the_slots_wait_for_one(tmp_path: Path) -> None:
    df = await rows(tmp_path, dataclasses.replace(STEADY, slots=2), n=4, concurrency=4)
    ttft = sorted(df["ttft_s"])
    # Two start at once; two wait for a slot, about one reply (0.45 s) long.
    assert ttft[1] < 0.2 and ttft[2] > 0.35, ttft


async def test_requests_in_flight_share_the_decode_throughput(tmp_path: Path) -> None:
    shared = dataclasses.replace(STEADY, server_tokens_per_s=20.0)
    alone = await rows(tmp_path / "alone", shared, n=2, concurrency=1)
    together = await rows(tmp_path / "together", shared, n=2, concurrency=2)
    decode_alone = (alone["latency_s"] - alone["ttft_s"]).median()
    decode_together = (together["latency_s"] - together["ttft_s"]).median()
    assert decode_alone == pytest.approx(0.45, abs=0.15)
    assert decode_together > 1.6 * decode_alone  # two share what one had: half the speed


async def test_prefill_time_grows_with_the_prompt(tmp_path: Path) -> None:
    profile = SimProfile(ttft_s=0.05, tokens_per_s=0.0, output_tokens=5, prefill_tokens_per_s=1000)
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": "short", "prompt": "hi"}, {"id": "long", "prompt": "word " * 1000}],
    )
    async with SimServer(default=profile) as sim:
        config = sim_config(tmp_path, sim.base_url, prompts=prompts, engine={"concurrency": 1})
        df = (await arun(config)).dataframe().set_index("prompt_id")
    assert df.loc["short", "ttft_s"] < 0.4
    assert df.loc["long", "ttft_s"] - df.loc["short", "ttft_s"] > 0.8  # 1000 tokens at 1000/s


async def test_sweep_over_rates_finds_the_knee(tmp_path: Path) -> None:
    # Alone a reply takes ~0.15 s; the server decodes 400 tokens/s: 20 replies/s at most.
    sim: dict[str, Any] = {
        "ttft_s": 0.05,
        "tokens_per_s": 200.0,
        "output_tokens": 200,
        "jitter": 0.0,
        "slots": 4,
        "server_tokens_per_s": 400.0,
    }
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(24))
    config = sim_config(
        tmp_path,
        "http://unused/v1",
        prompts=prompts,
        engine={"concurrency": 256, "arrival": "constant"},
    )
    model = dataclasses.replace(config.models[0], provider="sim", base_url=None, sim=sim)
    config = dataclasses.replace(
        config,
        models=(model,),
        defaults={"max_tokens": 20},
        slo={"latency_s": 0.5, "attainment": 0.9},
    )
    table = await sweep(config, [Level("rate", 4), Level("rate", 60)], tmp_path / "sweep")
    low, high = (table[table["value"] == rate].iloc[0] for rate in (4, 60))
    assert low["latency_p50_s"] < 0.35
    assert high["latency_p50_s"] > 2 * low["latency_p50_s"]  # the queue beyond the knee
    assert high["ttft_p50_s"] > low["ttft_p50_s"] + 0.1
    assert "- m1: 4 req/s" in render(table, dict(config.slo))


async def test_faults_apply_to_built_in_models_too(tmp_path: Path) -> None:
    faulty = dataclasses.replace(FAST, error_rate=1.0)
    async with (
        SimServer(default=faulty) as sim,
        openai.AsyncOpenAI(base_url=sim.base_url, api_key="k", max_retries=0) as c,
    ):
        for model in ("Llama-4-Scout-17B-16E-Instruct-FP8", "some-other-model"):
            with pytest.raises(openai.InternalServerError) as info:
                await c.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}]
                )
            assert info.value.status_code == 503


async def test_an_injected_validation_500_is_final_at_once(tmp_path: Path) -> None:
    invalid = dataclasses.replace(FAST, invalid_rate=1.0)
    async with SimServer(default=invalid) as sim:
        config = sim_config(
            tmp_path,
            sim.base_url,
            n_prompts=3,
            models=("Llama-3.3-70B-Instruct",),
            engine={"max_retries": 5},
        )
        df = (await arun(config)).dataframe()
        requests = sim.stats.requests
    assert (df["error_type"] == "invalid_request").all() and (df["http_status"] == 500).all()
    assert (df["attempts"] == 1).all() and requests == 3
