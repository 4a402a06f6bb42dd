"""Errors that retrying cannot fix end fast: invalid requests, rejected keys, dead endpoints."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiohttp import web

from llamabatch import RunConfig, SimServer, arun
from llamabatch.sim import server
from llamabatch.sim.formats import SimFormat
from tests.helpers import FAST, prompt_rows, sim_config, write_jsonl

pytestmark = pytest.mark.anyio


async def test_a_validation_500_is_final_at_the_first_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # llama-cpp-python's server knows no `developer` role (an OpenAI one, so llamabatch sends it).
    monkeypatch.setattr(server, "ROLES", frozenset({"system", "user", "assistant", "tool"}))
    rows: list[dict[str, Any]] = prompt_rows(5)
    rows.append({"id": "bad-role", "messages": [{"role": "developer", "content": "hi"}]})
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    async with SimServer(default=FAST) as sim:
        # Default backoff: six retries of the bad row would take about half a minute.
        config = sim_config(tmp_path, sim.base_url, prompts=prompts, engine={"backoff_base_s": 0.5})
        result = await arun(config)
        requests = sim.stats.requests
    df = result.dataframe().set_index("prompt_id")
    bad = df.loc["bad-role"]
    assert (bad["status"], bad["error_type"], bad["attempts"]) == ("error", "invalid_request", 1)
    assert bad["http_status"] == 500 and "validation error" in bad["error_message"]
    assert (df.drop(index="bad-role")["status"] == "ok").all()
    assert requests == 6 and result.exit_code == 3


class PoisonSim(SimServer):
    """Answers a prompt that mentions "poison" with a retryable 500, every time."""

    async def _answer(
        self, request: web.Request, body: dict[str, Any], model: str, fmt: SimFormat
    ) -> web.StreamResponse:
        if "poison" in json.dumps(body["messages"]):
            error = {
                "error": {"message": "CUDA error: illegal memory access", "type": "server_error"}
            }
            return web.json_response(error, status=500)
        return await super()._answer(request, body, model, fmt)


async def test_one_poisoned_prompt_does_not_open_the_breaker(tmp_path: Path) -> None:
    rows = [{"id": "poison", "prompt": "poison"}, *prompt_rows(6)]
    prompts = write_jsonl(tmp_path / "p.jsonl", rows)
    async with PoisonSim(default=FAST) as sim:
        config = sim_config(
            tmp_path,
            sim.base_url,
            prompts=prompts,
            engine={
                "concurrency": 1,
                "max_retries": 4,
                "backoff_max_s": 0.01,
                "breaker_threshold": 2,
                "breaker_cooldown_s": 30,
                "breaker_max_open_s": 0.1,
            },
        )
        result = await arun(config)
    df = result.dataframe().set_index("prompt_id")
    # Five failures in a row, all of one prompt: counted once, below the threshold of 2.
    assert (df.loc["poison", "attempts"], df.loc["poison", "error_type"]) == (5, "server")
    assert "circuit open" not in df.loc["poison", "error_message"]
    assert (df.drop(index="poison")["status"] == "ok").all()


async def test_a_rejected_key_stops_that_model_after_one_request_per_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with SimServer(default=FAST, api_key="right") as sim:
        config = sim_config(
            tmp_path,
            sim.base_url,
            n_prompts=40,
            models=("good", "bad"),
            engine={"concurrency": 4},
        )
        config = replace_model(replace_model(config, "good", api_key="right"), "bad", api_key="x")
        with caplog.at_level(logging.WARNING, logger="llamabatch"):
            result = await arun(config, check=False)
        bad_requests = sim.stats.by_model["bad"]
    df = result.dataframe()
    bad, good = df[df["model"] == "bad"], df[df["model"] == "good"]
    assert (good["status"] == "ok").all() and len(good) == 40
    assert len(bad) == 40 and (bad["error_type"] == "auth").all()
    assert bad_requests <= 4  # at most the requests already in flight, one per worker
    assert bad["error_message"].str.startswith("not sent: bad stopped after HTTP 401").sum() >= 36
    (line,) = [r.getMessage() for r in caplog.records if "stopped" in r.getMessage()]
    assert line.startswith("bad: stopped: HTTP 401")


def replace_model(config: RunConfig, name: str, **changes: Any) -> RunConfig:
    models = tuple(
        dataclasses.replace(m, **changes) if m.name == name else m for m in config.models
    )
    return dataclasses.replace(config, models=models)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_dead_endpoint_ends_the_run_at_once(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    async with SimServer(default=FAST) as sim:
        config = sim_config(tmp_path, sim.base_url, n_prompts=80, models=("up", "down"))
        config = replace_model(config, "down", base_url=dead)
        started = time.monotonic()
        result = await arun(config, check=False)
        elapsed = time.monotonic() - started
    df = pd.read_parquet(config.output)
    down = df[df["model"] == "down"]
    assert (df[df["model"] == "up"]["status"] == "ok").all()
    assert len(down) == 80 and (down["error_type"] == "connection").all()
    assert down["attempts"].max() == 1 and down["error_message"].str.contains("refused").all()
    assert result.exit_code == 3 and elapsed < 15
