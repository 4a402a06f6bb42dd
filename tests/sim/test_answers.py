"""The simulator's eval-answer knob: deterministic, per-model accuracy, wrong answers look right."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from llamabatch import SimProfile, SimServer, arun
from llamabatch.errors import UsageError
from tests.helpers import sim_config, write_jsonl

pytestmark = pytest.mark.anyio


def eval_set(path: Path, n: int = 40) -> Path:
    return write_jsonl(
        path,
        [
            {"id": f"q{i}", "prompt": f"What is {i} + {i}?", "expected": str(2 * i)}
            for i in range(n)
        ],
    )


async def run_eval(tmp_path: Path, accuracy: dict[str, float], out: str) -> pd.DataFrame:
    prompts = eval_set(tmp_path / "eval.jsonl")
    profiles = {
        model: SimProfile(
            ttft_s=0.0, tokens_per_s=0.0, jitter=0.0, answers=str(prompts), accuracy=acc
        )
        for model, acc in accuracy.items()
    }
    async with SimServer(profiles=profiles) as sim:
        config = sim_config(tmp_path / out, sim.base_url, prompts=prompts, models=tuple(accuracy))
        result = await arun(config)
    return result.dataframe()


async def test_accuracy_sets_the_share_of_right_answers(tmp_path: Path) -> None:
    df = await run_eval(tmp_path, {"good": 0.9, "weak": 0.5, "perfect": 1.0, "never": 0.0}, "a")
    right = (df["output_text"] == df["expected"]).groupby(df["model"]).mean()
    assert right["perfect"] == 1.0 and right["never"] == 0.0
    assert 0.75 <= right["good"] <= 1.0 and 0.3 <= right["weak"] <= 0.7
    assert right["good"] > right["weak"]
    # Wrong answers are other prompts' answers: numbers here, never filler.
    assert df["output_text"].str.fullmatch(r"\d+").all()
    assert (df["completion_tokens"] == 1).all()


async def test_answers_are_deterministic(tmp_path: Path) -> None:
    first = await run_eval(tmp_path, {"m": 0.6}, "a")
    second = await run_eval(tmp_path, {"m": 0.6}, "b")
    key = ["model", "prompt_id"]
    a = first.sort_values(key)["output_text"].tolist()
    b = second.sort_values(key)["output_text"].tolist()
    assert a == b


async def test_prompts_not_in_the_table_get_filler(tmp_path: Path) -> None:
    table = eval_set(tmp_path / "eval.jsonl", 3)
    other = write_jsonl(tmp_path / "other.jsonl", [{"id": "x", "prompt": "Tell me a story."}])
    profile = SimProfile(ttft_s=0.0, tokens_per_s=0.0, output_tokens=12, answers=str(table))
    async with SimServer(default=profile) as sim:
        result = await arun(sim_config(tmp_path, sim.base_url, prompts=other))
    (text,) = result.dataframe()["output_text"]
    assert len(text.split()) > 3


async def test_a_missing_answers_file_fails_at_start(tmp_path: Path) -> None:
    server = SimServer(default=SimProfile(answers=str(tmp_path / "nope.jsonl")))
    with pytest.raises(UsageError, match=r"simulator answers file .*nope\.jsonl"):
        await server.start()
