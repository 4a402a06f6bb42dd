"""The public Python API."""

from __future__ import annotations

from pathlib import Path

import llamabatch
from tests.helpers import prompt_rows, write_jsonl


def test_public_names_are_pinned() -> None:
    assert sorted(llamabatch.__all__) == sorted(
        [
            "ConfigError",
            "EngineConfig",
            "LlamabatchError",
            "ModelConfig",
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
