"""Never pay twice: a batch-mode run killed at each phase resumes without re-submitting."""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest

from llamabatch import SimServer
from tests.helpers import FAST, prompt_rows, write_jsonl
from tests.results.test_crash import finish, start

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
N = 30


def write_config(tmp_path: Path, base_url: str) -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(N))
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[run]
input = "{prompts}"
output = "{tmp_path / "out"}"
mode = "batch"
repeats = 2
[engine]
batch_poll_s = 0.01
batch_poll_max_s = 0.05
[[models]]
name = "m"
provider = "openai"
model = "m"
base_url = "{base_url}"
"""
    )
    return config


@pytest.mark.parametrize("phase", ["upload", "create", "poll", "download"])
async def test_sigkill_at_each_phase_then_resume_submits_each_key_once(
    tmp_path: Path, phase: str
) -> None:
    async with SimServer(default=FAST) as sim:
        config = write_config(tmp_path, sim.base_url)
        sim.batches.hold = {phase}
        process = await start(config)
        await sim.batches.reached(phase)
        process.kill()
        await finish(process)
        sim.batches.release()
        code, err = await finish(await start(config))
        assert code == 0, err
    assert len(sim.batches.submitted) == 2 * N
    assert set(sim.batches.submitted.values()) == {1}  # each key in exactly one batch
    assert sim.batches.calls["create"] == 1
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == 2 * N and not df.duplicated(["prompt_id", "sample"]).any()
    assert (df["status"] == "ok").all() and df["batch_id"].nunique() == 1


async def test_ctrl_c_stops_waiting_without_cancelling_and_the_next_run_collects(
    tmp_path: Path,
) -> None:
    async with SimServer(default=FAST) as sim:
        config = write_config(tmp_path, sim.base_url)
        sim.batches.timing.in_progress_s = 3600
        sim.batches.hold = {"poll"}
        process = await start(config)
        await sim.batches.reached("poll")
        sim.batches.release()  # the poll answers "in_progress"; the run waits for the next
        process.send_signal(signal.SIGINT)
        code, err = await finish(process)
        assert code == 130 and "Resume with" in err
        assert [b.data["status"] for b in sim.batches._batches.values()] == ["in_progress"]
        sim.batches.timing.in_progress_s = 0
        code, err = await finish(await start(config))
        assert code == 0, err
    assert set(sim.batches.submitted.values()) == {1}
    assert len(pd.read_parquet(tmp_path / "out")) == 2 * N
