"""Embeddings in bulk against the simulator over real HTTP: packing, vectors, faults, resume."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llamabatch import SimProfile, SimServer, arun, config_from_dict
from llamabatch.sim.embeddings import unit_vector
from tests.helpers import write_jsonl

pytestmark = pytest.mark.anyio
DIMS = 24
QUICK = SimProfile(ttft_s=0.0, jitter=0.0, embedding_dims=DIMS)


def inputs(path: Path, n: int, *, words: int = 4) -> Path:
    rows = [{"id": f"d{i}", "text": " ".join([f"doc{i}"] * words)} for i in range(n)]
    return write_jsonl(path, rows)


def embed_config(
    tmp_path: Path, sim: SimServer, prompts: Path, *, ollama: bool = False, **model: Any
) -> Any:
    base = sim.root_url if ollama else sim.base_url
    return config_from_dict(
        {
            "run": {"input": str(prompts), "output": str(tmp_path / "out")},
            "engine": {"concurrency": 4, "timeout_s": 10, "backoff_base_s": 0.01},
            "defaults": {"max_tokens": 64, "temperature": 0.0},  # for chat models only
            "models": [
                {
                    "name": "e",
                    "provider": "ollama" if ollama else "openai",
                    "model": "embedder",
                    "base_url": base,
                    "task": "embed",
                    **model,
                }
            ],
        }
    )


def assert_vectors_match_their_inputs(df: pd.DataFrame, dims: int = DIMS) -> None:
    for row in df.itertuples():
        assert row.dimensions == dims and len(row.embedding) == dims
        assert np.allclose(row.embedding, unit_vector(row.text, dims), atol=1e-6), row.prompt_id


@pytest.mark.parametrize("ollama", [False, True], ids=["openai", "ollama"])
async def test_one_row_per_input_packed_into_requests(tmp_path: Path, ollama: bool) -> None:
    n = 100
    prompts = inputs(tmp_path / "p.jsonl", n)
    async with SimServer(default=QUICK) as sim:
        result = await arun(embed_config(tmp_path, sim, prompts, ollama=ollama, batch_inputs=16))
        requests = sim.stats.requests
    df = result.dataframe()
    assert result.exit_code == 0 and len(df) == n and df["prompt_id"].is_unique
    assert requests == math.ceil(n / 16)
    assert_vectors_match_their_inputs(df)
    assert (df["status"] == "ok").all() and df["output_text"].isna().all()
    # The server counts 4 words a text; a request's count is split over its inputs.
    assert (df["usage_source"] == "split").all() and df["prompt_tokens"].sum() == 4 * n
    assert df["completion_tokens"].isna().all() and df["ttft_s"].isna().all()
    assert df["request_params"].eq("{}").all()  # [defaults] are for chat models
    schema = pq.read_schema(next((tmp_path / "out").glob("part-*.parquet")))
    assert schema.field("embedding").type == pa.list_(pa.float32())


async def test_dimensions_and_base64_pass_through(tmp_path: Path) -> None:
    prompts = inputs(tmp_path / "p.jsonl", 10)
    params = {"dimensions": 8, "encoding_format": "base64"}
    async with SimServer(default=QUICK) as sim:
        result = await arun(embed_config(tmp_path, sim, prompts, params=params))
    df = result.dataframe()
    assert_vectors_match_their_inputs(df, dims=8)
    assert df["request_params"].iloc[0] == '{"dimensions":8,"encoding_format":"base64"}'


async def test_the_token_budget_bounds_a_request(tmp_path: Path) -> None:
    prompts = inputs(tmp_path / "p.jsonl", 12, words=10)  # about 12 estimated tokens each
    async with SimServer(default=QUICK) as sim:
        config = embed_config(tmp_path, sim, prompts, batch_inputs=64, batch_tokens=30)
        result = await arun(config)
        assert sim.stats.requests == 6  # two inputs a request
    assert result.ok == 12


async def test_429s_and_broken_responses_are_retried_per_request(tmp_path: Path) -> None:
    prompts = inputs(tmp_path / "p.jsonl", 40)
    async with SimServer(default=dataclasses.replace(QUICK, retry_after_s=0)) as sim:
        sim.script.extend(["429", "503", "disconnect", "malformed", "error-event"])
        result = await arun(embed_config(tmp_path, sim, prompts, batch_inputs=8))
        assert sim.stats.requests == 5 + 5
    df = result.dataframe()
    assert result.exit_code == 0 and len(df) == 40 and df["prompt_id"].is_unique
    assert_vectors_match_their_inputs(df)  # no vector landed on another input's row
    # The rows of a request share its attempts: each failed attempt counts for its 8 rows.
    assert df["attempts"].sum() == 40 + 5 * 8 and df.groupby("attempts").size().mod(8).eq(0).all()


async def test_a_request_refused_for_one_input_is_split_so_only_that_input_fails(
    tmp_path: Path,
) -> None:
    rows = [{"id": f"d{i}", "text": f"short text {i}"} for i in range(6)]
    rows[3]["text"] = " ".join(["long"] * 50)
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    profile = SimProfile(ttft_s=0.0, jitter=0.0, embedding_dims=DIMS, context_tokens=20)
    async with SimServer(default=profile) as sim:
        result = await arun(embed_config(tmp_path, sim, prompts, batch_inputs=6))
        assert sim.stats.requests == 1 + 6
    df = result.dataframe().set_index("prompt_id")
    assert df.loc["d3", "status"] == "error" and df.loc["d3", "error_type"] == "context_length"
    assert (df.drop(index="d3")["status"] == "ok").all() and result.exit_code == 3
    assert df.loc["d0", "usage_source"] == "server"  # alone in its request: its own count


async def test_resume_sends_only_the_inputs_without_a_vector(tmp_path: Path) -> None:
    prompts = inputs(tmp_path / "p.jsonl", 30)
    async with SimServer(default=QUICK) as sim:
        config = embed_config(tmp_path, sim, prompts, batch_inputs=10)
        config = dataclasses.replace(
            config, engine=dataclasses.replace(config.engine, max_retries=0, concurrency=1)
        )
        sim.script.extend(["ok", "503"])
        first = await arun(config)
        assert first.ok == 20 and first.errors == {"server": 10} and sim.stats.requests == 3
        second = await arun(config)
        assert second.ok == 10 and sim.stats.requests == 4  # one request: the ten failed inputs
    df = second.dataframe()
    assert len(df) == 30 and df["prompt_id"].is_unique and (df["status"] == "ok").all()
    assert_vectors_match_their_inputs(df)


@pytest.mark.slow
async def test_sigkill_mid_run_and_resume_embed_every_input_exactly_once(tmp_path: Path) -> None:
    n, batch, concurrency, kills = 600, 10, 4, 3
    prompts = inputs(tmp_path / "p.jsonl", n)
    profile = SimProfile(ttft_s=0.02, jitter=0.0, embedding_dims=DIMS)
    async with SimServer(default=profile) as sim:
        config = tmp_path / "run.toml"
        config.write_text(
            f'[run]\ninput = "{prompts}"\noutput = "{tmp_path / "out"}"\n'
            f"[engine]\nconcurrency = {concurrency}\n"
            f'[[models]]\nname = "e"\nprovider = "openai"\nmodel = "m"\ntask = "embed"\n'
            f'batch_inputs = {batch}\nbase_url = "{sim.base_url}"\n'
        )
        argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q"]
        for _ in range(kills):
            process = await anyio.open_process(argv, env=os.environ.copy())
            await sim.wait_for_requests(sim.stats.requests + 8)
            process.kill()
            await process.wait()
            await process.aclose()
        result = await anyio.run_process(argv, check=False)
        assert result.returncode == 0, result.stderr.decode()
        sent = sim.stats.requests
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == n and df["prompt_id"].is_unique and (df["status"] == "ok").all()
    assert_vectors_match_their_inputs(df)
    assert sent <= n // batch + kills * concurrency, sent
