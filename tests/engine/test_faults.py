"""The fault matrix: every misbehaviour of a server ends in an ok row or the right error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from llamabatch import SimProfile, SimServer, arun
from tests.helpers import FAST, sim_config

pytestmark = pytest.mark.anyio
QUICK_RETRY = SimProfile(ttft_s=0.0, tokens_per_s=0.0, output_tokens=8, retry_after_s=0.05)
NO_RETRY_AFTER = SimProfile(ttft_s=0.0, tokens_per_s=0.0, output_tokens=8, retry_after_s=None)

# (name, scripted server actions, profile, expected status, error_type, attempts)
MATRIX = [
    ("5xx burst then ok", ["500", "502", "503"], FAST, "ok", None, 4),
    ("429 with Retry-After", ["429"], QUICK_RETRY, "ok", None, 2),
    ("429 without Retry-After", ["429"], NO_RETRY_AFTER, "ok", None, 2),
    ("429 on every attempt", ["429"] * 4, QUICK_RETRY, "error", "rate_limit", 4),
    ("mid-stream disconnect", ["disconnect"], FAST, "ok", None, 2),
    ("headers then nothing", ["hang"], FAST, "ok", None, 2),
    ("one byte per second", ["trickle"], FAST, "ok", None, 2),
    ("malformed JSON chunk", ["malformed"], FAST, "ok", None, 2),
    ("error event in a 200", ["error-event"], FAST, "ok", None, 2),
    ("HTML 502 page", ["html502"], FAST, "ok", None, 2),
    ("HTML 502 every time", ["html502"] * 4, FAST, "error", "server", 4),
    ("307 redirect", ["redirect"], FAST, "ok", None, 1),
    ("400 bad request", ["400"], FAST, "error", "invalid_request", 1),
    ("500 that is a validation error", ["validation500"], FAST, "error", "invalid_request", 1),
    ("401 unauthorised", ["401"], FAST, "error", "auth", 1),
    ("404 unknown model", ["404"], FAST, "error", "not_found", 1),
    ("hang on every attempt", ["hang"] * 4, FAST, "error", "timeout", 4),
]


@pytest.mark.parametrize(
    ("script", "profile", "status", "error_type", "attempts"),
    [case[1:] for case in MATRIX],
    ids=[case[0] for case in MATRIX],
)
async def test_fault(
    tmp_path: Path,
    script: list[str],
    profile: SimProfile,
    status: str,
    error_type: str | None,
    attempts: int,
) -> None:
    async with SimServer(default=profile) as sim:
        sim.script.extend(script)
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=1, engine={"timeout_s": 0.5, "max_retries": 3}
        )
        result = await arun(config)
        requests = sim.stats.requests
    df = pd.read_parquet(config.output)
    assert len(df) == 1  # nothing duplicated
    row = df.iloc[0]
    assert (row["status"], row["attempts"]) == (status, attempts)
    assert (row["error_type"] if status == "error" else None) == error_type
    assert requests == attempts + (1 if "redirect" in script else 0)
    if status == "ok":
        assert row["output_text"] and result.exit_code == 0
    else:
        assert row["error_message"] and result.exit_code == 3


async def test_html_error_page_is_summarised_in_the_row(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        sim.script.append("html502")
        config = sim_config(tmp_path, sim.base_url, n_prompts=1, engine={"max_retries": 0})
        await arun(config)
    (row,) = pd.read_parquet(config.output).to_dict("records")
    assert row["error_message"] == "HTTP 502: HTML error page: 502 Bad Gateway"
    assert row["http_status"] == 502


async def test_retry_after_beyond_the_cap_fails_instead_of_sleeping(tmp_path: Path) -> None:
    profile = SimProfile(ttft_s=0.0, tokens_per_s=0.0, rate_limit_rate=1.0, retry_after_s=3600)
    async with SimServer(default=profile) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=1, engine={"max_retry_after_s": 5})
        await arun(config)
    (row,) = pd.read_parquet(config.output).to_dict("records")
    assert (row["error_type"], row["attempts"]) == ("rate_limit", 1)
    assert "exceeds max_retry_after_s" in row["error_message"]


async def test_random_faults_across_models_end_in_one_row_each(tmp_path: Path) -> None:
    flaky = SimProfile(
        ttft_s=0.0,
        tokens_per_s=0.0,
        output_tokens=8,
        error_rate=0.15,
        rate_limit_rate=0.15,
        disconnect_rate=0.15,
        retry_after_s=0.01,
    )
    async with SimServer(default=flaky, seed=3) as sim:
        config = sim_config(
            tmp_path, sim.base_url, n_prompts=60, models=("a", "b", "c"), engine={"max_retries": 20}
        )
        result = await arun(config)
    df = pd.read_parquet(config.output)
    assert len(df) == 180 and not df.duplicated(["model", "prompt_id", "sample"]).any()
    assert (df["status"] == "ok").all(), df["error_message"].dropna().tolist()
    assert df["attempts"].sum() == sim.stats.requests and (df["attempts"] > 1).any()
    assert result.exit_code == 0


async def test_dead_endpoint_trips_the_breaker_without_stalling_others(tmp_path: Path) -> None:
    profiles = {"down": SimProfile(error_rate=1.0), "up": FAST}
    async with SimServer(profiles=profiles) as sim:
        config = sim_config(
            tmp_path,
            sim.base_url,
            n_prompts=40,
            models=("down", "up"),
            engine={
                "max_retries": 3,
                "backoff_max_s": 0.05,
                "breaker_threshold": 5,
                "breaker_cooldown_s": 0.05,
                "breaker_max_open_s": 0.5,
            },
        )
        await arun(config)
        down_requests = sim.stats.by_model["down"]
    df = pd.read_parquet(config.output)
    assert (df[df["model"] == "up"]["status"] == "ok").all()
    down = df[df["model"] == "down"]
    assert (down["error_type"] == "server").all() and len(down) == 40
    assert down["error_message"].str.contains("circuit open").any()
    # Without the breaker every row would burn 1 + max_retries = 4 requests (160 in all).
    assert down_requests < 80, down_requests
