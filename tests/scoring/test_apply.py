"""Scores and cost are written as rows finish; stored parts can be rescored."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from llamabatch import SimProfile, SimServer, arun, config_from_dict
from llamabatch.errors import ConfigError, UsageError
from llamabatch.results import part_files
from llamabatch.scoring import rescore
from llamabatch.scoring.apply import Scoring
from tests.helpers import write_jsonl

pytestmark = pytest.mark.anyio


def eval_rows(n: int = 20) -> list[dict[str, object]]:
    return [
        {"id": f"q{i}", "prompt": f"What is {i} times 3?", "expected": str(3 * i), "kind": "math"}
        for i in range(n)
    ]


def config_dict(tmp_path: Path, base_url: str, **extra: object) -> dict[str, object]:
    prompts = write_jsonl(tmp_path / "eval.jsonl", eval_rows())
    models = [
        {
            "name": name,
            "provider": "openai",
            "model": name,
            "base_url": base_url,
            "usd_per_mtok": {"input": 1.0, "output": 2.0},
        }
        for name in ("good", "weak")
    ]
    return {
        "run": {"input": str(prompts), "output": str(tmp_path / "out")},
        "engine": {"timeout_s": 10},
        "models": models,
        "scorers": [
            {"name": "exact", "type": "exact"},
            {"name": "num", "type": "numeric", "where": {"kind": "math"}},
        ],
        **extra,
    }


def sim(tmp_path: Path) -> SimServer:
    answers = str(tmp_path / "eval.jsonl")
    fast = {"ttft_s": 0.0, "tokens_per_s": 0.0, "answers": answers}
    return SimServer(
        profiles={
            "good": SimProfile(**fast, accuracy=0.9),  # type: ignore[arg-type]
            "weak": SimProfile(**fast, accuracy=0.4),  # type: ignore[arg-type]
        }
    )


async def test_run_writes_scores_and_cost(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "eval.jsonl", eval_rows())
    async with sim(tmp_path) as server:
        result = await arun(config_from_dict(config_dict(tmp_path, server.base_url)))
    df = result.dataframe()
    assert {"score_exact", "score_num", "cost_usd"} <= set(df.columns)
    assert df["score_exact"].isin([0.0, 1.0]).all()
    assert (df["score_exact"] == (df["output_text"] == df["expected"])).all()
    means = df.groupby("model")["score_num"].mean()
    assert means["good"] > means["weak"]
    expected_cost = (df["prompt_tokens"] * 1.0 + df["completion_tokens"] * 2.0) / 1e6
    assert df["cost_usd"].tolist() == pytest.approx(expected_cost.tolist())


async def test_rescore_recomputes_from_stored_outputs(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "eval.jsonl", eval_rows())
    async with sim(tmp_path) as server:
        config = config_from_dict(config_dict(tmp_path, server.base_url))
        await arun(config)
        requests = server.stats.requests
        new_scorers = [{"name": "any", "type": "json"}]
        fixed = config_from_dict(config_dict(tmp_path, server.base_url, scorers=new_scorers))
        report = await rescore(config.output, Scoring.from_config(fixed))
        assert server.stats.requests == requests  # no model was called
    df = pd.read_parquet(config.output)
    assert "score_exact" not in df.columns and "score_any" in df.columns
    assert (df["score_any"] == 1.0).all()  # every answer is a JSON number
    assert report.rows == 40 and report.parts == len(part_files(config.output))
    schemas = {str(pq.read_schema(p)) for p in part_files(config.output)}
    assert len(schemas) == 1


async def test_a_failing_python_scorer_scores_none_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flaky.py").write_text(
        "def score(row):\n    if row['prompt_id'] == 'q1':\n        raise KeyError('boom')\n"
        "    return 0.25\n"
    )
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "eval.jsonl", eval_rows())
    async with sim(tmp_path) as server:
        data = config_dict(
            tmp_path,
            server.base_url,
            scorers=[{"name": "py", "type": "python", "function": "flaky:score"}],
        )
        result = await arun(config_from_dict(data))
    df = result.dataframe().set_index(["model", "prompt_id"])
    assert result.exit_code == 0
    assert df["score_py"].isna().sum() == 2 and df.loc[("good", "q2"), "score_py"] == 0.25


def test_config_prices_and_judge_model_are_validated(tmp_path: Path) -> None:
    data = config_dict(tmp_path, "http://127.0.0.1:9/v1")
    data["models"][0]["usd_per_mtok"] = {"input": 1.0}  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"models\[0\] \(good\).usd_per_mtok must be"):
        config_from_dict(data)
    judge = {"name": "j", "type": "judge", "model": "nobody", "rubric": "be right"}
    with pytest.raises(ConfigError, match="model 'nobody' is not one of the"):
        config_from_dict(config_dict(tmp_path, "http://127.0.0.1:9/v1", scorers=[judge]))


async def test_prompt_columns_may_not_look_like_score_columns(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "x", "score_mine": 1}]
    data = config_dict(tmp_path, "http://127.0.0.1:9/v1")
    data["run"]["input"] = str(write_jsonl(tmp_path / "p.jsonl", rows))  # type: ignore[index]
    with pytest.raises(UsageError, match="score_mine clash with result columns"):
        await arun(config_from_dict(data), check=False)


def test_no_cost_when_a_count_it_needs_is_missing() -> None:
    scoring = Scoring(prices={"m": (1.0, 2.0)})
    row = {"model": "m", "prompt_tokens": 1_000_000, "completion_tokens": 500_000}
    assert scoring.cost(row) == 2.0
    assert scoring.cost({**row, "prompt_tokens": None}) is None  # not 1.0: input is not free
    assert scoring.cost({**row, "completion_tokens": None}) is None
    free_input = Scoring(prices={"m": (0.0, 2.0)})
    assert free_input.cost({**row, "prompt_tokens": None}) == 1.0
