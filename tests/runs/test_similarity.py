"""The `similarity` scorer: outputs and expected answers compared through an embedding model."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from llamabatch import ConfigError, arun, config_from_dict
from llamabatch.runs.score import score_results
from tests.helpers import write_jsonl

pytestmark = pytest.mark.anyio
FAST = {"ttft_s": 0.0, "tokens_per_s": 0.0, "jitter": 0.0, "embedding_dims": 64}
QUESTIONS = [
    {"id": f"q{i}", "prompt": f"What is {i} + 1?", "expected": f"It is {i + 1}"} for i in range(10)
]
SIMILARITY = {"name": "close", "type": "similarity", "model": "embedder"}


def config(tmp_path: Path, *models: dict[str, Any], scorer: dict[str, Any] = SIMILARITY) -> Any:
    prompts = write_jsonl(tmp_path / "p.jsonl", QUESTIONS)
    embedder = {"name": "embedder", "provider": "sim", "task": "embed", "sim": FAST}
    return config_from_dict(
        {
            "run": {"input": str(prompts), "output": str(tmp_path / "out")},
            "engine": {"timeout_s": 10, "max_retries": 0},
            "models": [*models, embedder],
            "scorers": [scorer],
        }
    )


async def test_right_answers_score_one_and_others_little(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "answers.jsonl", QUESTIONS)
    cand = {
        "name": "cand",
        "provider": "sim",
        "sim": {**FAST, "answers": str(prompts), "accuracy": 0.5},
    }
    result = await arun(config(tmp_path, cand))
    df = result.dataframe()
    chat = df[df["model"] == "cand"]
    right = chat["output_text"] == chat["expected"]
    assert 0 < right.sum() < len(chat)
    assert chat.loc[right, "score_close"].round(5).eq(1.0).all()
    # Unrelated texts: the simulator's vectors are random directions in 64 dimensions.
    assert chat.loc[~right, "score_close"].abs().lt(0.7).all()
    # The embedding model's own rows compare their stored vector (of the prompt) with expected.
    embedded = df[df["model"] == "embedder"]
    assert embedded["score_close"].notna().all() and embedded["score_close"].abs().lt(0.7).all()


async def test_an_embedding_rows_vector_of_the_expected_text_scores_one(tmp_path: Path) -> None:
    rows = [{"id": f"d{i}", "text": f"doc {i}", "expected": f"doc {i}"} for i in range(4)]
    rows.append({"id": "other", "text": "apples", "expected": "pears"})
    docs = write_jsonl(tmp_path / "docs.jsonl", rows)
    result = await arun(dataclasses.replace(config(tmp_path), input=docs))
    scores = result.dataframe().set_index("prompt_id")["score_close"]
    assert scores.drop("other").round(5).eq(1.0).all() and abs(scores["other"]) < 0.7
    # Re-scoring embeds the expected texts again and finds the same.
    report = await score_results(tmp_path / "out")
    assert report.rows == 5 and report.judge_errors == 0


@pytest.mark.parametrize(
    ("scorer", "message"),
    [
        ({**SIMILARITY, "model": "cand"}, r'needs a task = "embed" model; \'cand\' is chat'),
        (
            {"name": "g", "type": "judge", "model": "embedder", "rubric": "r"},
            r'needs a task = "chat" model; \'embedder\' is embed',
        ),
        ({"name": "s", "type": "similarity"}, "model is required"),
    ],
)
def test_a_scorer_needs_a_model_of_its_kind(
    tmp_path: Path, scorer: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, {"name": "cand", "provider": "sim"}, scorer=scorer)
