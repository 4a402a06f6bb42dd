"""LLM-as-judge scorers through the engine, their stored verdicts, and `llamabatch score`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import orjson
import pandas as pd
import pytest

from llamabatch import SimProfile, SimServer, arun, config_from_dict
from llamabatch.cli.commands import main
from llamabatch.config.scorers import parse_scorers
from llamabatch.runs.score import score_results
from llamabatch.scoring.verdicts import judge_messages, parse_verdict
from tests.helpers import write_jsonl

pytestmark = pytest.mark.anyio
RUBRIC = "Award full marks for the correct number."
QUESTIONS = [
    {"id": f"q{i}", "prompt": f"What is {i} + 1?", "expected": str(i + 1)} for i in range(6)
]


async def cli(argv: list[str]) -> int:
    """The command line, in a worker thread (it runs its own event loop)."""
    return await anyio.to_thread.run_sync(main, argv)


def judge_table(**options: Any) -> dict[str, Any]:
    return {"name": "graded", "type": "judge", "model": "grader", "rubric": RUBRIC, **options}


def config(tmp_path: Path, grader: dict[str, Any], scorer: dict[str, Any] | None = None) -> Any:
    prompts = write_jsonl(tmp_path / "p.jsonl", QUESTIONS)
    fast = {"ttft_s": 0.0, "tokens_per_s": 0.0, "jitter": 0.0}
    return config_from_dict(
        {
            "run": {"input": str(prompts), "output": str(tmp_path / "out")},
            "engine": {"timeout_s": 10, "max_retries": 0},
            "models": [
                {"name": "cand", "provider": "sim", "sim": {**fast, "answers": str(prompts)}},
                {"name": "grader", "provider": "sim", "sim": fast, **grader},
            ],
            "scorers": [scorer or judge_table()],
        }
    )


def verdicts_file(tmp_path: Path, reply: str) -> Path:
    """The grader's answer table: for each judge request the candidate's outputs will cause."""
    (spec,) = parse_scorers([judge_table()], "t")
    rows = []
    for q in QUESTIONS:
        row = {"expected": q["expected"], "output_text": q["expected"]}
        messages = judge_messages(spec, q["prompt"], row)
        rows.append({"messages": messages, "expected": reply})
    return write_jsonl(tmp_path / "verdicts.jsonl", rows)


def test_parse_verdict() -> None:
    assert parse_verdict("Looks right.\nSCORE: 8", 10) == 0.8
    assert parse_verdict("score: 3 ... SCORE: **10**", 10) == 1.0
    assert parse_verdict("SCORE: 11", 10) is None
    assert parse_verdict("no idea", 10) is None


def test_judge_prompt_carries_prompt_reference_response_and_rubric() -> None:
    (spec,) = parse_scorers([judge_table(scale=5)], "t")
    system, user = judge_messages(spec, "What is 2 + 2?", {"expected": "4", "output_text": "5"})
    assert system["role"] == "system"
    for part in ("What is 2 + 2?", "[REFERENCE ANSWER]\n4", "[RESPONSE]\n5", RUBRIC, "0 to 5"):
        assert part in user["content"]


async def test_judge_scores_and_stores_verdicts(tmp_path: Path) -> None:
    table = verdicts_file(tmp_path, "The answer is correct.\nSCORE: 8")
    cfg = config(tmp_path, {"sim": {"ttft_s": 0.0, "tokens_per_s": 0.0, "answers": str(table)}})
    result = await arun(cfg, models=["cand"])  # the grader judges but is not itself run
    df = result.dataframe()
    assert set(df["model"]) == {"cand"} and result.exit_code == 0
    assert (df["score_graded"] == 0.8).all()
    verdicts = [orjson.loads(v) for v in df["verdict_graded"]]
    assert {v["status"] for v in verdicts} == {"ok"}
    assert all(v["text"].endswith("SCORE: 8") and v["judge"] == "grader" for v in verdicts)
    # Re-scoring reuses the stored verdicts: no judge call.
    report = await score_results(cfg.output)
    assert (report.judged, report.rows) == (0, 6)
    assert (pd.read_parquet(cfg.output)["score_graded"] == 0.8).all()


async def test_a_failing_judge_is_recorded_as_an_error(tmp_path: Path) -> None:
    async with SimServer(default=SimProfile(error_rate=1.0)) as broken:
        grader = {"provider": "openai", "base_url": broken.base_url, "model": "judge-model"}
        result = await arun(config(tmp_path, grader), models=["cand"])
        assert broken.stats.statuses[503] == 6
    df = result.dataframe()
    assert result.exit_code == 0 and (df["status"] == "ok").all()
    assert df["score_graded"].isna().all()
    verdict = json.loads(df["verdict_graded"].iloc[0])
    assert verdict["status"] == "error" and verdict["error_type"] == "server"
    assert verdict["http_status"] == 503


async def test_a_reply_without_a_score_is_no_verdict(tmp_path: Path) -> None:
    result = await arun(config(tmp_path, {}), models=["cand"])  # the grader sends filler text
    verdicts = [json.loads(v) for v in result.dataframe()["verdict_graded"]]
    assert {v["status"] for v in verdicts} == {"no_verdict"} and verdicts[0]["text"]


async def test_score_command_with_a_fixed_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, {}, scorer={"name": "exact", "type": "contains", "values": ["7"]})
    await arun(cfg, models=["cand"])
    fixed = tmp_path / "fixed.toml"
    fixed.write_text(
        f'[run]\ninput = "{cfg.input}"\n[[models]]\nname = "cand"\nprovider = "sim"\n'
        '[[scorers]]\nname = "exact"\ntype = "exact"\n'
    )
    assert await cli(["score", str(cfg.output), "--config", str(fixed)]) == 0
    assert "rescored 6 rows in 1 part(s)" in capsys.readouterr().out
    assert (pd.read_parquet(cfg.output)["score_exact"] == 1.0).all()
    manifest = json.loads((cfg.output / "_manifest.json").read_text())
    assert manifest["config"]["scorers"][0]["type"] == "exact" and manifest["rescored_at"]
    # Without --config, the manifest (now holding the fixed scorer) is used.
    assert await cli(["score", str(cfg.output)]) == 0


async def test_score_command_exits_3_when_judge_calls_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with SimServer(default=SimProfile(error_rate=1.0)) as broken:
        grader = {"provider": "openai", "base_url": broken.base_url, "model": "judge-model"}
        cfg = config(tmp_path, grader)
        await arun(cfg, models=["cand"])
        assert await cli(["score", str(cfg.output)]) == 3
    assert "6 judge call(s), 6 failed" in capsys.readouterr().out


def test_score_command_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", str(tmp_path)]) == 2
    assert "holds no results" in capsys.readouterr().err
