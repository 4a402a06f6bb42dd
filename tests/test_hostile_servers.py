"""Issue #14, misbehaving servers (cases 1-4, 6): runs end, memory stays bounded, rows say why."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pandas as pd
import pytest

from llamabatch import arun
from llamabatch.errors import RequestError
from tests.helpers import prompt_rows, sim_config, write_jsonl
from tests.hostile import HostileServer

pytestmark = pytest.mark.anyio


async def run_case(tmp_path: Path, case: str, n: int = 3, **settings: Any) -> pd.DataFrame:
    async with HostileServer() as server:
        config = sim_config(tmp_path, server.base_url(case), n_prompts=n, **settings)
        await arun(config)
    return pd.read_parquet(tmp_path / "out")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("case", ["usage-huge", "usage-negative"])
async def test_case_02_usage_out_of_range_is_estimated_with_a_note(
    tmp_path: Path, case: str, stream: bool
) -> None:
    df = await run_case(tmp_path, case, model_settings={"stream": stream})
    assert (df["status"] == "ok").all() and (df["usage_source"] == "estimated").all()
    assert (df["prompt_tokens"] > 0).all() and (df["completion_tokens"] > 0).all()
    assert df["notes"].str.startswith("server usage out of range").all()
    assert df["notes"].str.contains("1e+30" if case == "usage-huge" else "-853", regex=False).all()


@pytest.mark.parametrize("case", ["retry-after", "retry-after-inf", "reset-huge"])
async def test_case_01_a_huge_rate_limit_pause_fails_rows_instead_of_stalling(
    tmp_path: Path, case: str
) -> None:
    async with HostileServer() as server:
        config = sim_config(
            tmp_path, server.base_url(case), n_prompts=30, engine={"concurrency": 4}
        )
        started = time.monotonic()
        result = await arun(config)
        elapsed = time.monotonic() - started
    assert elapsed < config.engine.max_retry_after_s  # in practice a second or two
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == 30 and len(server.seen) <= 4 + 1  # the first wave only
    failed = df[df["status"] == "error"]
    assert len(failed) >= 30 - 4 and (failed["error_type"] == "rate_limit").all()
    assert failed["error_message"].str.contains("max_retry_after_s = 120").all()
    assert result.exit_code == 3


async def test_case_03_workers_are_started_as_work_arrives(tmp_path: Path) -> None:
    tasks: list[int] = []

    class CountTasks:
        def on_start(self, pending: int) -> None: ...

        def on_row(self, row: Mapping[str, Any]) -> None:
            tasks.append(len(asyncio.all_tasks()))

        def on_retry(self, model: str, error: RequestError, delay_s: float) -> None: ...

    async with HostileServer() as server:
        config = sim_config(
            tmp_path,
            server.base_url("ok"),
            n_prompts=5,
            models=("m1", "m2"),
            engine={"concurrency": 10_000},
        )
        result = await arun(config, observer=CountTasks())
    assert result.ok == 10
    assert max(tasks) < 40  # 10,000 workers per model up front would be 20,000 tasks


@pytest.mark.parametrize("stream", [True, False])
async def test_case_04_a_100_mb_answer_fails_its_row_in_bounded_memory(
    tmp_path: Path, stream: bool
) -> None:
    async with HostileServer() as server:
        config = write_config(tmp_path, server.base_url("huge"), n=5, stream=stream)
        done = await anyio.run_process(
            [sys.executable, "-m", "llamabatch.cli", "run", str(config), "-q"], check=False
        )
    assert done.returncode == 3, done.stderr.decode()
    df = pd.read_parquet(tmp_path / "out")
    assert len(df) == 5 and (df["error_type"] == "response_too_large").all()
    assert df["error_message"].str.contains("max_response_bytes = 16,777,216").all()
    assert (df["attempts"] == 1).all()  # not retried
    assert server.hung_up == 5  # the connection was dropped, not read to its end
    manifest = json.loads((tmp_path / "out" / "_manifest.json").read_text())
    print(
        f"\npeak RSS, five 100 MB answers (stream={stream}): {manifest['client']['max_rss_mb']} MB"
    )
    assert manifest["client"]["max_rss_mb"] < 300


def write_config(tmp_path: Path, base_url: str, *, n: int, stream: bool) -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(n))
    config = tmp_path / "c.toml"
    config.write_text(
        f"[run]\ninput = '{prompts}'\noutput = '{tmp_path / 'out'}'\n"
        "[engine]\nconcurrency = 4\ntimeout_s = 60\n"
        f"[[models]]\nname = 'm1'\nprovider = 'openai'\nbase_url = '{base_url}'\n"
        f"stream = {str(stream).lower()}\n"
    )
    return config


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_case_06_a_post_redirected_as_get_is_an_error_naming_the_target(
    tmp_path: Path, status: int
) -> None:
    df = await run_case(tmp_path, f"redirect-{status}", n=2)
    assert (df["status"] == "error").all() and (df["http_status"] == status).all()
    assert (df["error_type"] == "invalid_request").all() and (df["attempts"] == 1).all()
    assert df["error_message"].str.contains("/ok/v1/chat/completions", regex=False).all()


@pytest.mark.parametrize("status", [307, 308])
async def test_case_06_307_308_keep_the_body_and_drop_the_key_across_origins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv("HOSTILE_TEST_KEY", "sk-abcdef123456")
    async with HostileServer() as server:
        # `localhost` here, 127.0.0.1 in the Location: another origin.
        base_url = server.base_url(f"redirect-{status}").replace("127.0.0.1", "localhost")
        config = sim_config(
            tmp_path, base_url, n_prompts=2, model_settings={"api_key_env": "HOSTILE_TEST_KEY"}
        )
        result = await arun(config)
    assert result.ok == 2
    first = server.seen[0]
    assert first[:2] == (f"redirect-{status}", "POST") and first[3] == "Bearer sk-abcdef123456"
    followed = [s for s in server.seen if s[0] == "ok"]
    assert len(followed) == 2
    assert all(method == "POST" and size > 0 and auth is None for _, method, size, auth in followed)
