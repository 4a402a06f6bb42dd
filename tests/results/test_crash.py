"""Killing, interrupting and rate-limiting real `llamabatch run` processes."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pandas as pd
import pytest
from anyio.abc import Process

from llamabatch import SimProfile, SimServer, arun
from tests.helpers import prompt_rows, sim_config, write_jsonl

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
CONCURRENCY = 4
PROFILE = SimProfile(ttft_s=0.02, tokens_per_s=400.0, output_tokens=20, jitter=0.0)


def write_config(tmp_path: Path, base_url: str, n: int) -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(n))
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[run]
input = "{prompts}"
output = "{tmp_path / "out"}"
[engine]
concurrency = {CONCURRENCY}
grace_s = 5
[[models]]
name = "m"
provider = "openai"
model = "m"
base_url = "{base_url}"
"""
    )
    return config


async def start(config: Path) -> Process:
    argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q"]
    return await anyio.open_process(argv, env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def finish(process: Process) -> tuple[int, str]:
    async with process:
        assert process.stderr is not None
        err = b"".join([chunk async for chunk in process.stderr])
        code = await process.wait()
    return code, err.decode()


async def test_sigkill_mid_run_loses_nothing_and_resends_at_most_in_flight(
    tmp_path: Path,
) -> None:
    n, kills = 80, 3
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, n)
        for _ in range(kills):
            process = await start(config)
            await sim.wait_for_requests(sim.stats.requests + 15)
            process.kill()
            await finish(process)
        code, err = await finish(await start(config))
        assert code == 0, err
        sent = sim.stats.requests
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == n and df["prompt_id"].is_unique and (df["status"] == "ok").all()
    assert n <= sent <= n + kills * CONCURRENCY, sent
    print(f"\nSIGKILL test: {n} prompts, {kills} kills, {sent} requests sent")


async def test_ctrl_c_saves_finished_rows_and_resume_completes(tmp_path: Path) -> None:
    n = 200
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, n)
        process = await start(config)
        await sim.wait_for_requests(20)
        process.send_signal(signal.SIGINT)
        code, err = await finish(process)
        assert code == 130, err
        assert f"Resume with: llamabatch run {config}" in err
        first = pd.read_parquet(tmp_path / "out")
        assert 20 <= len(first) < n and (first["status"] == "ok").all()
        code, err = await finish(await start(config))
        assert code == 0, err
        assert sim.stats.requests == n
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == n and df["prompt_id"].is_unique


async def test_second_ctrl_c_cancels_in_flight_at_once(tmp_path: Path) -> None:
    slow = SimProfile(ttft_s=30.0, tokens_per_s=0.0, output_tokens=5)
    async with SimServer(default=slow) as sim:
        config = write_config(tmp_path, sim.base_url, 20)
        process = await start(config)
        await sim.wait_for_requests(CONCURRENCY)
        process.send_signal(signal.SIGINT)
        await anyio.sleep(0.5)  # not synchronisation: gives the first signal time to be seen
        process.send_signal(signal.SIGINT)
        code, err = await finish(process)
    assert code == 130, err
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == CONCURRENCY and (df["error_type"] == "cancelled").all()


@pytest.mark.parametrize("headers", [True, False], ids=["x-ratelimit headers", "429s only"])
async def test_rate_limited_server_is_not_hammered(tmp_path: Path, headers: bool) -> None:
    limit, window, n = 20, 2.0, 100  # 10 requests/s, sliding window
    profile = SimProfile(ttft_s=0.01, tokens_per_s=0.0, output_tokens=5, retry_after_s=None)
    async with SimServer(
        default=profile, rpm_limit=limit, rpm_window_s=window, rate_headers=headers
    ) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=n, engine={"concurrency": 16})
        started = anyio.current_time()
        result = await arun(config)
        elapsed = anyio.current_time() - started
        rejected = sim.stats.statuses[429]
    # A sliding window lets the first `limit` requests through at once; the rest
    # can go no faster than limit/window.
    achieved = (n - limit) / (limit / window) / elapsed
    print(
        f"\nrate limit ({'headers' if headers else '429 only'}): {n} rows in {elapsed:.1f} s = "
        f"{achieved:.0%} of the limit, {rejected} answered 429 ({rejected / (n + rejected):.1%})"
    )
    assert result.ok == n
    assert rejected <= (5 if headers else n // 3)
