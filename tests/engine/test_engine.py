"""The engine end to end against a real simulator server on a loopback port."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from llamabatch import SimProfile, SimServer, arun
from llamabatch.results import COLUMNS
from tests.helpers import FAST, sim_config

pytestmark = pytest.mark.anyio


async def test_every_row_ok_with_all_fixed_columns(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=6, models=("a", "b"))
        result = await arun(config)
    df = result.dataframe()
    assert result.exit_code == 0 and result.ok == 12
    assert set(COLUMNS) <= set(df.columns)
    assert len(df) == 12 and (df["status"] == "ok").all()
    assert df.groupby("model")["prompt_id"].nunique().to_dict() == {"a": 6, "b": 6}
    assert (df["usage_source"] == "server").all() and (df["completion_tokens"] > 0).all()
    assert (df["prompt_tokens_source"] == "server").all()
    assert (df["completion_tokens_source"] == "server").all()
    assert (df["ttft_s"] > 0).all() and (df["ttft_s"] <= df["latency_s"]).all()
    assert (df["attempts"] == 1).all() and (df["finish_reason"] == "stop").all()
    assert sim.stats.requests == 12


async def test_retries_429_and_503_honouring_retry_after(tmp_path: Path) -> None:
    profile = SimProfile(ttft_s=0.0, tokens_per_s=0.0, output_tokens=5, retry_after_s=0.2)
    async with SimServer(default=profile) as sim:
        sim.script.extend(["429", "503"])
        result = await arun(sim_config(tmp_path, sim.base_url, n_prompts=1))
    (row,) = result.dataframe().to_dict("records")
    assert row["status"] == "ok" and row["attempts"] == 3
    assert sim.stats.requests == 3 and sim.stats.statuses[429] == 1
    assert row["queue_s"] >= 0.2  # the Retry-After wait is queue time...
    assert row["latency_s"] < 0.2  # ...never latency


@pytest.mark.parametrize(("status", "error_type"), [("400", "invalid_request"), ("401", "auth")])
async def test_client_errors_are_not_retried(tmp_path: Path, status: str, error_type: str) -> None:
    async with SimServer(default=FAST) as sim:
        sim.script.append(status)
        result = await arun(sim_config(tmp_path, sim.base_url, n_prompts=1))
    (row,) = result.dataframe().to_dict("records")
    assert (row["status"], row["error_type"], row["http_status"]) == (
        "error",
        error_type,
        int(status),
    )
    assert row["attempts"] == 1 and sim.stats.requests == 1
    assert result.exit_code == 3


async def test_retries_give_up_after_max_retries(tmp_path: Path) -> None:
    async with SimServer(default=SimProfile(error_rate=1.0)) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=1, engine={"max_retries": 2})
        result = await arun(config)
    (row,) = result.dataframe().to_dict("records")
    assert (row["error_type"], row["attempts"], row["http_status"]) == ("server", 3, 503)
    assert sim.stats.requests == 3


async def test_concurrency_caps_hold_at_the_server(tmp_path: Path) -> None:
    slow = SimProfile(ttft_s=0.03, tokens_per_s=0.0, output_tokens=3, jitter=0.0)
    async with SimServer(default=slow) as sim:
        config = sim_config(
            tmp_path,
            sim.base_url,
            n_prompts=30,
            models=("a", "b"),
            engine={"concurrency": 5},
            model_settings={"concurrency": 3},
        )
        result = await arun(config)
    assert result.ok == 60
    assert sim.stats.max_in_flight == 5
    assert max(sim.stats.max_in_flight_by_model.values()) == 3


async def test_resume_sends_only_what_is_not_ok(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        sim.script.extend(["ok", "400", "ok", "400"])
        config = sim_config(tmp_path, sim.base_url, n_prompts=6, engine={"concurrency": 1})
        first = await arun(config)
        assert (first.ok, first.error_count, sim.stats.requests) == (4, 2, 6)
        second = await arun(config)
        assert (second.ok, second.error_count, second.already_done) == (2, 0, 4)
        assert sim.stats.requests == 8
        third = await arun(config)
        assert third.ok == 0 and sim.stats.requests == 8
    df = pd.read_parquet(config.output)
    assert len(df) == 6 and df["prompt_id"].is_unique and (df["status"] == "ok").all()


async def test_failing_model_does_not_hold_back_the_others(tmp_path: Path) -> None:
    profiles = {"bad": SimProfile(rate_limit_rate=1.0, retry_after_s=0.3), "good": FAST}
    async with SimServer(profiles=profiles) as sim:
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=8, models=("bad", "good"), engine={"max_retries": 2}
        )
        result = await arun(config)
    df = result.dataframe()
    good, bad = df[df["model"] == "good"], df[df["model"] == "bad"]
    assert (good["status"] == "ok").all() and (bad["error_type"] == "rate_limit").all()
    assert good["finished_at"].max() < bad["finished_at"].min()


async def test_timeout_bounds_a_silent_server(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        sim.script.append("hang")
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=1, engine={"timeout_s": 0.3, "max_retries": 0}
        )
        result = await arun(config)
    (row,) = result.dataframe().to_dict("records")
    assert (row["error_type"], row["http_status"]) == ("timeout", 200)
    # The deadline runs from connecting; latency from the request's first byte on the wire.
    assert 0.2 <= row["latency_s"] < 2


@pytest.mark.parametrize("fault", ["disconnect", "error-event", "malformed"])
async def test_broken_streams_are_retried_without_mixing_text(tmp_path: Path, fault: str) -> None:
    async with SimServer(default=FAST) as sim:
        clean = await arun(sim_config(tmp_path / "clean", sim.base_url, n_prompts=1))
        sim.script.append(fault)
        broken = await arun(sim_config(tmp_path / "broken", sim.base_url, n_prompts=1))
    (want,) = clean.dataframe().to_dict("records")
    (got,) = broken.dataframe().to_dict("records")
    assert got["status"] == "ok" and got["attempts"] == 2
    assert got["output_text"] == want["output_text"]


async def test_non_streaming_mode(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=2, model_settings={"stream": False})
        result = await arun(config)
    df = result.dataframe()
    assert (df["status"] == "ok").all() and (
        df["completion_tokens"] == df["output_text"].str.split().str.len()
    ).all()
    # A whole reply has no first token: no TTFT, and nothing derived from it.
    assert df["ttft_s"].isna().all() and df["decode_tps"].isna().all()
    assert (df["latency_s"] > 0).all()


async def test_error_rows_carry_no_token_counts(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        sim.script.append("400")
        result = await arun(sim_config(tmp_path, sim.base_url, n_prompts=1))
    (row,) = result.dataframe().to_dict("records")
    assert row["status"] == "error"
    for column in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert pd.isna(row[column]), column
    for column in ("usage_source", "prompt_tokens_source", "completion_tokens_source"):
        assert pd.isna(row[column]), column


async def test_api_key_never_stored_even_when_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-live-0123456789abcdef"
    monkeypatch.setenv("SIM_TEST_KEY", key)
    async with SimServer(default=FAST) as sim:
        sim.script.append("echo-auth")
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=1, model_settings={"api_key_env": "SIM_TEST_KEY"}
        )
        result = await arun(config)
    assert f"Bearer {key}" in sim.stats.authorization
    (row,) = result.dataframe().to_dict("records")
    assert row["error_type"] == "auth" and "Authorization" in row["error_message"]
    for path in Path(config.output).rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


async def test_repeats_and_extra_columns_are_carried(tmp_path: Path) -> None:
    from tests.helpers import write_jsonl

    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": "a", "prompt": "x", "expected": "y", "topic": "t", "level": 2}],
    )
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, prompts=prompts, run={"repeats": 3})
        result = await arun(config)
    df = result.dataframe().sort_values("sample")
    assert df["sample"].tolist() == [0, 1, 2]
    assert (df["expected"] == "y").all() and (df["topic"] == "t").all() and (df["level"] == 2).all()
