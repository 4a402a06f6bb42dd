"""The public Python API."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

import llamabatch
from tests.helpers import prompt_rows, write_jsonl


def test_public_names_are_pinned() -> None:
    assert sorted(llamabatch.__all__) == sorted(
        [
            "ConfigError",
            "EngineConfig",
            "LlamabatchError",
            "ModelConfig",
            "Observer",
            "Prompt",
            "PromptError",
            "PromptSet",
            "RequestError",
            "RunConfig",
            "RunResult",
            "SimProfile",
            "SimServer",
            "UsageError",
            "__version__",
            "arun",
            "config_from_dict",
            "load_config",
            "run",
        ]
    )
    for name in llamabatch.__all__:
        assert hasattr(llamabatch, name)


def test_run_from_a_dict_config_with_the_in_process_simulator(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(4))
    config = llamabatch.config_from_dict(
        {
            "run": {"input": str(prompts), "output": str(tmp_path / "out")},
            "models": [
                {"name": "scout", "provider": "sim", "sim": {"ttft_s": 0.0, "tokens_per_s": 0.0}}
            ],
        }
    )
    result = llamabatch.run(config)
    df = result.dataframe()
    assert result.exit_code == 0 and len(df) == 4 and (df["status"] == "ok").all()
    assert llamabatch.run(config, limit=2).ok == 0  # resumed: nothing left to send


@pytest.mark.anyio
async def test_the_commands_are_python_functions_too(tmp_path: Path) -> None:
    from llamabatch.report import (
        Thresholds,
        build_report,
        compare,
        load_results,
        render_html,
        render_markdown,
    )
    from llamabatch.runs import check, score_results

    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": f"q{i}", "prompt": f"What is {i}?", "expected": "x"} for i in range(3)],
    )
    data = {
        "run": {"input": str(prompts), "output": str(tmp_path / "a")},
        "models": [{"name": "scout", "provider": "sim", "sim": {"ttft_s": 0.0, "tokens_per_s": 0}}],
        "scorers": [{"name": "has_x", "type": "contains", "values": ["x"]}],
    }
    config = llamabatch.config_from_dict(data)
    first = await llamabatch.arun(config)
    second = await llamabatch.arun(config, output=tmp_path / "b")
    assert first.ok == second.ok == 3

    report = build_report(load_results([first.output]))
    assert "scout" in render_markdown(report) and "<html" in render_html(report)
    same = compare(first.output, second.output, thresholds=Thresholds(latency=False))
    assert not same.regressed
    assert all(c.ok for c in await check(config))
    rescored = await score_results(first.output)
    assert (rescored.parts, rescored.rows) == (1, 3)


@pytest.mark.anyio
async def test_library_runs_leave_the_garbage_collector_alone(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(3))
    config = llamabatch.config_from_dict(
        {
            "run": {"input": str(prompts), "output": str(tmp_path / "out")},
            "models": [{"name": "m", "provider": "sim", "sim": {"ttft_s": 0, "tokens_per_s": 0}}],
        }
    )
    gc.unfreeze()  # an earlier test may have run the command line in this process
    enabled = gc.isenabled()
    result = await llamabatch.arun(config)
    assert result.exit_code == 0
    # gc.freeze() is the command line's choice (its own process), never a library call's.
    assert (gc.get_freeze_count(), gc.isenabled()) == (0, enabled)


@pytest.mark.anyio
async def test_library_runs_leave_the_switch_interval_alone(tmp_path: Path) -> None:
    # Streamed replies over HTTP (the simulator's server), so the arrival watcher runs.
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(3))
    config = llamabatch.config_from_dict(
        {
            "run": {"input": str(prompts), "output": str(tmp_path / "out")},
            "models": [
                {"name": "m", "provider": "sim", "sim": {"ttft_s": 0.01, "tokens_per_s": 500}}
            ],
        }
    )
    seen: list[float] = []

    class Note:
        def on_start(self, pending: int) -> None:
            pass

        def on_row(self, row: object) -> None:
            seen.append(sys.getswitchinterval())

        def on_retry(self, model: str, error: str, delay_s: float) -> None:
            pass

    switch = sys.getswitchinterval()
    result = await llamabatch.arun(config, observer=Note())
    assert result.exit_code == 0 and len(seen) == 3
    # The GIL switch interval is the host application's: set only by processes llamabatch owns.
    assert seen == [switch] * 3 and sys.getswitchinterval() == switch
