"""Each dataset format, in a file made the way its source makes it, runs on the simulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.from_thread
import pandas as pd
import pytest

from llamabatch import SimServer, arun
from llamabatch.cli.commands import main
from tests import formatfixtures as fx
from tests.helpers import FAST, sim_config


class Lines:
    """An observer keeping what the run announces."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def on_input(self, line: str) -> None:
        self.lines.append(line)

    def on_start(self, pending: int) -> None: ...

    def on_row(self, row: Any) -> None: ...

    def on_retry(self, *args: Any) -> None: ...


@pytest.mark.anyio
async def test_sharegpt_dump(tmp_path: Path) -> None:
    path = fx.write_sharegpt(tmp_path / "ShareGPT_V3_unfiltered_cleaned_split.json")
    seen = Lines()
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, prompts=path, run={"skip_invalid": True})
        result = await arun(config, observer=seen)
    assert seen.lines == [f"{path}: ShareGPT format, 5 conversations (1 invalid)"]
    assert result.exit_code == 0 and sim.stats.requests == fx.SHAREGPT_VALID
    df = result.dataframe().set_index("prompt_id")
    assert df.loc["i6IyJda_0", "expected"].startswith("1. Homogeneity")
    sent = {tuple(m["content"] for m in b["messages"]) for b in sim.stats.bodies}
    turns = [t["value"] for t in fx.SHAREGPT[0]["conversations"][:3]]
    assert tuple(turns) in sent


@pytest.mark.anyio
async def test_sharegpt_first_turn_only_as_serving_benchmarks_do(tmp_path: Path) -> None:
    path = fx.write_sharegpt(tmp_path / "sharegpt.json")
    async with SimServer(default=FAST) as sim:
        run = {"skip_invalid": True, "first_turn_only": True, "format": "sharegpt"}
        result = await arun(sim_config(tmp_path, sim.base_url, prompts=path, run=run))
    assert result.exit_code == 0 and sim.stats.requests == fx.SHAREGPT_VALID
    assert all(b["messages"][-1]["role"] == "user" for b in sim.stats.bodies)
    assert max(len(b["messages"]) for b in sim.stats.bodies) == 2  # a system turn at most


@pytest.mark.anyio
async def test_openai_batch_file(tmp_path: Path) -> None:
    path = fx.write_openai_batch(tmp_path / "batchinput.jsonl")
    seen = Lines()
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, prompts=path, models=("llama-4-scout",))
        result = await arun(config, observer=seen)
    dropped = "dropped from the bodies (the config decides them): model (2)"
    assert f"OpenAI Batch format, 2 requests; {dropped}" in seen.lines[0]
    assert result.exit_code == 0 and sim.stats.requests == 2
    # The config decides the model; the body's other settings are the row's params.
    assert sim.stats.by_model == {"llama-4-scout": 2}
    assert all(b["max_tokens"] == 1000 and b["stream"] is True for b in sim.stats.bodies)
    df = result.dataframe()
    assert sorted(df["prompt_id"]) == ["request-1", "request-2"]
    assert set(df["model_id"]) == {"llama-4-scout"}


@pytest.mark.anyio
async def test_alpaca_json_array(tmp_path: Path) -> None:
    path = fx.write_alpaca(tmp_path / "alpaca_data.json")
    async with SimServer(default=FAST) as sim:
        result = await arun(sim_config(tmp_path, sim.base_url, prompts=path))
    assert result.exit_code == 0 and sim.stats.requests == 3
    df = result.dataframe()
    assert sorted(df["expected"]) == sorted(r["output"] for r in fx.ALPACA)
    sent = {b["messages"][0]["content"] for b in sim.stats.bodies}
    assert "Identify the odd one out.\n\nTwitter, Instagram, Telegram" in sent


@pytest.mark.anyio
async def test_resume_rereads_when_the_mapping_changes(tmp_path: Path) -> None:
    """The scan cache is keyed by the mapping too: the same bytes, mapped otherwise, are
    other prompts (here: other content under the same ids, which resume refuses)."""
    path = fx.write_hf_parquet(tmp_path / "gsm8k.parquet")
    mapped = {"columns": {"prompt": "question", "expected": "answer", "id": "qid"}}
    async with SimServer(default=FAST) as sim:
        assert (await arun(sim_config(tmp_path, sim.base_url, prompts=path, run=mapped))).ok == 3
        again = await arun(sim_config(tmp_path, sim.base_url, prompts=path, run=mapped))
        assert again.already_done == 3 and again.ok == 0 and sim.stats.requests == 3
        swapped = {"columns": {"prompt": "answer", "expected": "question", "id": "qid"}}
        with pytest.raises(Exception, match="prompt content changed under existing ids"):
            await arun(sim_config(tmp_path, sim.base_url, prompts=path, run=swapped))
    assert sim.stats.requests == 3


@contextmanager
def sim_thread() -> Iterator[SimServer]:
    """A simulator on its own event loop, for the command line to run against."""
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(SimServer(default=FAST)) as sim,
    ):
        yield sim


def test_cli_runs_a_hugging_face_csv_with_a_columns_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fx.write_hf_csv(tmp_path / "gsm8k.csv")
    with sim_thread() as sim:
        config = tmp_path / "gsm8k.toml"
        config.write_text(
            f'[run]\ninput = "{path}"\noutput = "{tmp_path / "out"}"\n'
            'columns = { prompt = "question", expected = "answer" }\n'
            f'[[models]]\nname = "m"\nprovider = "openai"\nbase_url = "{sim.base_url}"\n'
        )
        assert main(["run", str(config)]) == 0
        assert sim.stats.requests == 3
    err = capsys.readouterr().err
    assert f"{path}: prompt rows, 3 prompts" in err
    df = pd.read_parquet(tmp_path / "out")
    assert sorted(df["expected"]) == sorted(r["answer"] for r in fx.GSM8K)


def test_cli_without_a_mapping_sends_nothing_and_says_what_to_add(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fx.write_hf_csv(tmp_path / "gsm8k.csv")
    with sim_thread() as sim:
        config = tmp_path / "gsm8k.toml"
        config.write_text(
            f'[run]\ninput = "{path}"\noutput = "{tmp_path / "out"}"\n'
            f'[[models]]\nname = "m"\nprovider = "openai"\nbase_url = "{sim.base_url}"\n'
        )
        assert main(["run", str(config), "--no-check"]) == 2
        assert sim.stats.requests == 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "columns: question, answer" in line
    assert 'columns = { prompt = "question", expected = "answer" }' in line
    assert not (tmp_path / "out").exists()
