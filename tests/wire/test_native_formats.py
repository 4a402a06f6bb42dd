"""The native formats end to end: the engine against the simulator's Llama API and Ollama paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamabatch import SimServer, arun
from tests.helpers import FAST, sim_config

pytestmark = pytest.mark.anyio
FORMATS = ["llama", "ollama"]


def base_url(sim: SimServer, provider: str) -> str:
    return sim.llama_base_url if provider == "llama" else sim.root_url


@pytest.mark.parametrize("provider", FORMATS)
async def test_every_row_ok_with_server_counts(tmp_path: Path, provider: str) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(
            tmp_path, base_url(sim, provider), n_prompts=4, model_settings={"provider": provider}
        )
        result = await arun(config)
    df = result.dataframe()
    assert result.exit_code == 0 and len(df) == 4 and (df["provider"] == provider).all()
    assert (df["usage_source"] == "server").all() and (df["finish_reason"] == "stop").all()
    assert (df["completion_tokens"] == df["output_text"].str.split().str.len()).all()
    assert (df["total_tokens"] == df["prompt_tokens"] + df["completion_tokens"]).all()
    assert (df["ttft_s"] > 0).all() and (df["ttft_s"] <= df["latency_s"]).all()
    assert sim.stats.requests == 4


@pytest.mark.parametrize("provider", FORMATS)
async def test_max_tokens_is_mapped_for_the_format(tmp_path: Path, provider: str) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(
            tmp_path,
            base_url(sim, provider),
            n_prompts=2,
            model_settings={"provider": provider, "params": {"max_tokens": 3}},
        )
        result = await arun(config)
    df = result.dataframe()
    assert (df["finish_reason"] == "length").all() and (df["completion_tokens"] == 3).all()
    assert json.loads(df["request_params"].iloc[0]) == {"max_tokens": 3}


@pytest.mark.parametrize("provider", FORMATS)
@pytest.mark.parametrize("fault", ["disconnect", "error-event", "malformed"])
async def test_broken_streams_are_retried_without_mixing_text(
    tmp_path: Path, provider: str, fault: str
) -> None:
    async with SimServer(default=FAST) as sim:
        url = base_url(sim, provider)
        settings = {"provider": provider}
        clean = await arun(sim_config(tmp_path / "a", url, n_prompts=1, model_settings=settings))
        sim.script.append(fault)
        broken = await arun(sim_config(tmp_path / "b", url, n_prompts=1, model_settings=settings))
    (want,) = clean.dataframe().to_dict("records")
    (got,) = broken.dataframe().to_dict("records")
    assert got["status"] == "ok" and got["attempts"] == 2
    assert got["output_text"] == want["output_text"] and "partial" not in got["output_text"]


@pytest.mark.parametrize("provider", FORMATS)
async def test_non_streaming(tmp_path: Path, provider: str) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(
            tmp_path,
            base_url(sim, provider),
            n_prompts=2,
            model_settings={"provider": provider, "stream": False},
        )
        result = await arun(config)
    df = result.dataframe()
    assert (df["status"] == "ok").all() and (df["usage_source"] == "server").all()
    assert (df["completion_tokens"] == df["output_text"].str.split().str.len()).all()


@pytest.mark.parametrize("provider", FORMATS)
async def test_auth_and_rate_limit_errors(tmp_path: Path, provider: str) -> None:
    async with SimServer(default=FAST, api_key="right-key") as sim:
        config = sim_config(
            tmp_path,
            base_url(sim, provider),
            n_prompts=1,
            model_settings={"provider": provider, "api_key_env": "NATIVE_TEST_KEY"},
            engine={"max_retries": 0},
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NATIVE_TEST_KEY", "wrong-key")
            result = await arun(config, check=False)  # the preflight would refuse the key
    (row,) = result.dataframe().to_dict("records")
    assert (row["error_type"], row["http_status"], row["attempts"]) == ("auth", 401, 1)
    assert "Incorrect API key" in row["error_message"]


async def test_ollama_server_timings_are_recorded(tmp_path: Path) -> None:
    from llamabatch import SimProfile

    profile = SimProfile(ttft_s=0.05, tokens_per_s=400.0, output_tokens=10, jitter=0.0)
    async with SimServer(default=profile) as sim:
        config = sim_config(
            tmp_path, sim.root_url, n_prompts=2, model_settings={"provider": "ollama"}
        )
        result = await arun(config)
    df = result.dataframe()
    assert df["server_prompt_s"].round(3).eq(0.05).all()
    assert (df["server_decode_s"] > 0).all() and (df["server_load_s"] == 0.001).all()
    assert df["server_decode_s"].le(df["latency_s"]).all()
