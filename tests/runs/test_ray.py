"""`llamabatch run --ray` on a local Ray cluster: actors, a named limiter, a killed actor."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import anyio
import pandas as pd
import pytest

from llamabatch import SimProfile, SimServer
from tests.helpers import prompt_rows, write_jsonl

pytest.importorskip("ray")
pytestmark = [pytest.mark.anyio, pytest.mark.slow]
PROFILE = SimProfile(ttft_s=0.02, tokens_per_s=400.0, output_tokens=20, jitter=0.0)


def write_config(tmp_path: Path, base_url: str, n: int, engine: str = "") -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(n))
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[run]
input = "{prompts}"
output = "{tmp_path / "out"}"
[engine]
concurrency = 8
workers = 2
{engine}
[[models]]
name = "m"
provider = "openai"
model = "m"
base_url = "{base_url}"
"""
    )
    return config


async def ray_run(config: Path, *, kill_after: SimServer | None = None) -> tuple[int, str]:
    """`llamabatch run CONFIG --ray` on a local cluster it starts; optionally SIGKILL one of
    its share actors once the server has seen 40 requests."""
    argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q", "--ray"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    async with await anyio.open_process(argv, env={**env, "PYTHONUNBUFFERED": "1"}) as process:
        if kill_after is not None:
            await kill_after.wait_for_requests(40)
            with anyio.fail_after(60):
                while not (actors := share_actors(process.pid)):
                    await anyio.sleep(0.1)
            os.kill(actors[0], signal.SIGKILL)
        assert process.stderr is not None
        err = b"".join([chunk async for chunk in process.stderr])
        code = await process.wait()
    return code, err.decode(errors="replace")


def share_actors(driver: int) -> list[int]:
    """The driver's ShareActor processes (Ray names them after the actor's class and method;
    the local cluster, so its actors, descend from the driver)."""
    parents, actors = {}, []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if (proc / "cmdline").read_bytes().startswith(b"ray::ShareActor"):
                actors.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == driver:
                return True
            pid = parents.get(pid, 0)
        return False

    return [pid for pid in actors if descends(pid)]


async def test_ray_actors_share_the_run_and_a_killed_actor_costs_only_its_requests(
    tmp_path: Path,
) -> None:
    n, concurrency = 160, 8
    async with SimServer(default=PROFILE) as sim:
        config = write_config(tmp_path, sim.base_url, n)
        code, err = await ray_run(config, kill_after=sim)
        assert code == 0, err[-3000:]
        assert "Ray actor" in err and "died" in err, err[-3000:]
        code, err = await ray_run(config)  # a resumed driver finds nothing left to send
        assert code == 0, err[-3000:]
        sent = sim.stats.requests
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == n and df["prompt_id"].is_unique and (df["status"] == "ok").all()
    assert df["run_id"].nunique() == 1
    assert n <= sent <= n + concurrency, sent  # at most the killed actor's requests in flight
    assert not (tmp_path / "out" / "_journal").exists()


async def test_ray_actors_share_one_rpm_limit(tmp_path: Path) -> None:
    # The server allows 15 requests/s; rpm = 600 allows 10/s for the whole cluster.
    n = 40
    profile = SimProfile(ttft_s=0.01, tokens_per_s=0.0, output_tokens=5, retry_after_s=None)
    limited = SimServer(default=profile, rpm_limit=30, rpm_window_s=2.0, rate_headers=False)
    async with limited as sim:
        config = write_config(tmp_path, sim.base_url, n)
        text = config.read_text().replace('name = "m"', 'name = "m"\nrpm = 600')
        config.write_text(text)
        code, err = await ray_run(config)
        assert code == 0, err[-3000:]
        assert sim.stats.statuses[429] == 0
    assert len(pd.read_parquet(tmp_path / "out")) == n
