"""Multi-turn conversations: each turn sent after the model's own earlier replies, one row each."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson
import pandas as pd
import pytest
from aiohttp import web

from llamabatch import SimProfile, SimServer, arun
from llamabatch.config import ScorerSpec
from tests.helpers import FAST, ROOT, sim_config, write_jsonl

pytestmark = pytest.mark.anyio
EXACT = ScorerSpec(
    name="exact",
    type="exact",
    options={"ignore_case": True, "ignore_whitespace": True, "ignore_punctuation": True},
)


class RecordingSim(SimServer):
    """The simulator, recording the messages of every chat request it is asked."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.asked: list[list[dict[str, Any]]] = []

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            if request.path.endswith("/chat/completions"):
                self.asked.append((await request.json())["messages"])
            return await handler(request)  # type: ignore[no-any-return]

        app.middlewares.append(record)
        return app

    def turns_asked(self) -> Counter[tuple[str, int]]:
        """How often each (first user message, turn) was asked."""
        return Counter(
            (users[0], len(users))
            for users in ([m["content"] for m in ms if m["role"] == "user"] for ms in self.asked)
        )


def conversations(path: Path, n: int, turns: int = 3) -> Path:
    rows = [
        {"id": f"c{i}", "turns": [f"conversation {i} question {t}" for t in range(1, turns + 1)]}
        for i in range(n)
    ]
    return write_jsonl(path, rows)


async def test_each_turn_is_a_row_and_follows_the_models_reply(tmp_path: Path) -> None:
    prompts = conversations(tmp_path / "p.jsonl", 4)
    async with RecordingSim(default=FAST) as sim:
        result = await arun(sim_config(tmp_path, sim.base_url, prompts=prompts))
    df = result.dataframe().sort_values(["prompt_id", "turn"])
    assert result.exit_code == 0 and len(df) == 12
    assert df.groupby("prompt_id")["turn"].apply(list).tolist() == [[1, 2, 3]] * 4
    assert (df["sample"] == 0).all() and df["prompt_hash"].nunique() == 4
    replies = {(r.prompt_id, r.turn): r.output_text for r in df.itertuples()}
    third = next(ms for ms in sim.asked if ms[-1]["content"] == "conversation 2 question 3")
    assert third == [
        {"role": "user", "content": "conversation 2 question 1"},
        {"role": "assistant", "content": replies[("c2", 1)]},
        {"role": "user", "content": "conversation 2 question 2"},
        {"role": "assistant", "content": replies[("c2", 2)]},
        {"role": "user", "content": "conversation 2 question 3"},
    ]
    # The prompt grows with the history: the server counts it.
    assert (
        df.groupby("prompt_id")["prompt_tokens"].apply(lambda s: s.is_monotonic_increasing)
    ).all()


async def test_a_failed_turn_ends_its_conversation_and_resume_goes_on_from_it(
    tmp_path: Path,
) -> None:
    prompts = conversations(tmp_path / "p.jsonl", 1)
    async with RecordingSim(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, prompts=prompts, engine={"max_retries": 0})
        sim.script.extend(["ok", "400"])  # turn 1 answered, turn 2 refused
        first = await arun(config)
        rows = first.dataframe().sort_values("turn")
        assert first.exit_code == 3
        assert rows[["turn", "status"]].values.tolist() == [[1, "ok"], [2, "error"]]
        assert sim.turns_asked() == {
            ("conversation 0 question 1", 1): 1,
            ("conversation 0 question 1", 2): 1,
        }
        second = await arun(config)  # resend the failed turn, then the rest
    df = second.dataframe().sort_values("turn")
    assert (
        second.exit_code == 0 and df["status"].eq("ok").all() and df["turn"].tolist() == [1, 2, 3]
    )
    assert sim.turns_asked() == {
        ("conversation 0 question 1", 1): 1,  # never asked again
        ("conversation 0 question 1", 2): 2,
        ("conversation 0 question 1", 3): 1,
    }
    assert sim.asked[-2][1] == {"role": "assistant", "content": rows["output_text"].iloc[0]}


async def test_keep_errors_leaves_a_failed_conversation_alone(tmp_path: Path) -> None:
    prompts = conversations(tmp_path / "p.jsonl", 2)
    async with RecordingSim(default=FAST) as sim:
        config = sim_config(
            tmp_path, sim.base_url, prompts=prompts, engine={"max_retries": 0, "concurrency": 1}
        )
        sim.script.extend(["400"])
        await arun(config)
        asked = len(sim.asked)
        again = await arun(config, keep_errors=True)
    assert again.exit_code == 0 and len(sim.asked) == asked


async def test_expected_answers_per_turn_are_scored(tmp_path: Path) -> None:
    data = ROOT / "datasets/multiturn.jsonl"
    profile = SimProfile(ttft_s=0.0, tokens_per_s=0.0, answers=str(data), accuracy=1.0)
    async with SimServer(default=profile) as sim:
        config = sim_config(
            tmp_path,
            sim.base_url,
            prompts=data,
            model_settings={"params": {"max_tokens": 16}},
        )
        result = await arun(dataclasses.replace(config, scorers=(EXACT,)))
    df = result.dataframe()
    assert len(df) == 40 and df.groupby("turn").size().to_dict() == {1: 20, 2: 20}
    assert (df["score_exact"] == 1.0).all()
    assert df.loc[df["prompt_id"] == "mt-add-then-double"].set_index("turn")[
        "expected"
    ].to_dict() == {
        1: "42",
        2: "84",
    }


@pytest.mark.slow
async def test_sigkill_between_turns_resumes_without_asking_a_stored_turn_again(
    tmp_path: Path,
) -> None:
    n, concurrency, kills = 30, 4, 3
    prompts = conversations(tmp_path / "p.jsonl", n, turns=3)
    config = tmp_path / "run.toml"
    out = tmp_path / "out"
    profile = SimProfile(ttft_s=0.02, tokens_per_s=400.0, output_tokens=10, jitter=0.0)
    async with RecordingSim(default=profile) as sim:
        config.write_text(
            f'[run]\ninput = "{prompts}"\noutput = "{out}"\n'
            f"[engine]\nconcurrency = {concurrency}\n"
            f'[[models]]\nname = "m"\nprovider = "openai"\nmodel = "m"\n'
            f'base_url = "{sim.base_url}"\n'
        )
        argv = [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q"]
        for _ in range(kills):
            stored = _stored_turns(out)
            before = len(sim.asked)
            process = await anyio.open_process(argv, env=os.environ.copy())
            await sim.wait_for_requests(sim.stats.requests + 12)
            process.kill()
            await process.wait()
            await process.aclose()
            asked_now = _turns(sim.asked[before:])
            assert not asked_now & stored, "a stored turn was asked again"
        stored = _stored_turns(out)
        before = len(sim.asked)
        result = await anyio.run_process(argv, check=False)
        assert result.returncode == 0, result.stderr.decode()
        assert not _turns(sim.asked[before:]) & stored
    df = pd.read_parquet(out)
    assert len(df) == 3 * n and (df["status"] == "ok").all()
    assert not df.duplicated(["prompt_id", "turn"]).any()
    assert len(sim.asked) <= 3 * n + kills * concurrency


def _turns(asked: list[list[dict[str, Any]]]) -> set[tuple[str, int]]:
    """(prompt id, turn) of each request, from its last user message."""
    found = set()
    for messages in asked:
        words = messages[-1]["content"].split()  # "conversation <i> question <t>"
        found.add((f"c{words[1]}", int(words[3])))
    return found


def _stored_turns(out: Path) -> set[tuple[str, int]]:
    """The turns an output holds as ok rows, parts and journal alike (as a killed run left it)."""
    found: set[tuple[str, int]] = set()
    if not out.exists():
        return found
    if list(out.glob("part-*.parquet")):
        df = pd.read_parquet(out, columns=["prompt_id", "turn", "status"])
        found |= {(p, int(t)) for p, t, s in df.itertuples(index=False) if s == "ok"}
    for segment in (out / "_journal").glob("*.jsonl"):
        for line in segment.read_bytes().splitlines():
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn last line was never counted
            if row["status"] == "ok":
                found.add((row["prompt_id"], row["turn"]))
    return found
