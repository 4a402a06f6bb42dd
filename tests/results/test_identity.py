"""An output directory keeps to one prompt set and one model list unless told otherwise."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from llamabatch import SimServer, UsageError, arun
from llamabatch.cli import main
from tests.helpers import FAST, prompt_rows, sim_config, write_jsonl

pytestmark = pytest.mark.anyio


def other_set(path: Path, n: int) -> Path:
    return write_jsonl(path, [{"id": f"q{i}", "prompt": f"Other question {i}?"} for i in range(n)])


async def test_a_different_prompt_set_is_refused_naming_it(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=4)
        await arun(config)
        other = dataclasses.replace(config, input=other_set(tmp_path / "other.jsonl", 3))
        with pytest.raises(UsageError) as info:
            await arun(other)
        message = str(info.value)
        assert "4 prompt(s) that" in message and str(other.input) in message
        assert "p0, p1, p2, p3" in message and "another prompt set" in message
        assert f"from {config.input}" in message
        assert sim.stats.requests == 4  # nothing sent
        # --no-resume --force replaces the old rows; --force would keep both sets.
        await arun(other, resume=False, force=True)
    df = pd.read_parquet(config.output)
    assert sorted(df["prompt_id"]) == ["q0", "q1", "q2"]


async def test_a_grown_prompt_set_resumes(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=3)
        await arun(config)
        write_jsonl(config.input, prompt_rows(5))
        result = await arun(config)
        assert (result.ok, result.already_done, sim.stats.requests) == (2, 3, 5)


async def test_force_keeps_rows_of_both_prompt_sets(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=2)
        await arun(config)
        other = dataclasses.replace(config, input=other_set(tmp_path / "other.jsonl", 2))
        result = await arun(other, force=True)
        assert result.ok == 2
    assert sorted(pd.read_parquet(config.output)["prompt_id"]) == ["p0", "p1", "q0", "q1"]


async def test_a_new_model_needs_add_models(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        one = sim_config(tmp_path, sim.base_url, n_prompts=3, models=["m1"])
        await arun(one)
        two = sim_config(tmp_path, sim.base_url, n_prompts=3, models=["m1", "m2"])
        with pytest.raises(UsageError, match="adds m2: add --add-models") as info:
            await arun(two)
        assert "rows of other models (m1)" in str(info.value)
        assert sim.stats.requests == 3
        result = await arun(two, add_models=True)
        assert (result.ok, result.already_done, sim.stats.requests) == (3, 3, 6)
        again = await arun(two)  # m2 belongs to the directory now
        assert again.ok == 0 and sim.stats.requests == 6
    manifest = json.loads((one.output / "_manifest.json").read_text())
    assert manifest["models"] == ["m1", "m2"]


async def test_running_some_models_at_a_time_is_not_adding(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=2, models=["m1", "m2"])
        await arun(config, models=["m1"])
        result = await arun(config, models=["m2"])
        assert result.ok == 2 and sim.stats.requests == 4


async def test_a_dropped_or_renamed_model_is_refused(tmp_path: Path) -> None:
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=2, models=["m1", "m2"])
        await arun(config)
        dropped = dataclasses.replace(config, models=config.models[:1])
        with pytest.raises(UsageError, match="rows of model 'm2', which this config does not"):
            await arun(dropped)
        renamed = dataclasses.replace(
            config, models=(config.models[0], dataclasses.replace(config.models[1], name="new"))
        )
        with pytest.raises(UsageError, match="model 'm2' is now named 'new'"):
            await arun(renamed, add_models=True)
        assert sim.stats.requests == 4
        forced = await arun(renamed, force=True)
        assert forced.ok == 2
    assert sorted(set(pd.read_parquet(config.output)["model"])) == ["m1", "m2", "new"]


def test_command_line_refuses_with_exit_2_and_adds_with_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(2))
    path = tmp_path / "run.toml"
    text = f'[run]\ninput = "{prompts}"\noutput = "{tmp_path / "out"}"\n'
    for name in ("m1", "m2"):
        text += (
            f'[[models]]\nname = "{name}"\nprovider = "sim"\nmodel = "{name}"\n'
            "sim = { ttft_s = 0.0, tokens_per_s = 0.0 }\n"
        )
        path.write_text(text)
        if name == "m1":
            assert main(["run", str(path), "-q"]) == 0
    assert main(["run", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this config adds m2: add --add-models" in err
    assert sorted(set(pd.read_parquet(tmp_path / "out")["model"])) == ["m1"]
    assert main(["run", str(path), "-q", "--add-models"]) == 0
    assert len(pd.read_parquet(tmp_path / "out")) == 4
