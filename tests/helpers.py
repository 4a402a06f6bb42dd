"""Helpers shared by the tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llamabatch import RunConfig, SimProfile, config_from_dict

ROOT = Path(__file__).resolve().parent.parent  # the repository
FAST = SimProfile(ttft_s=0.0, tokens_per_s=0.0, output_tokens=8, jitter=0.0)


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any] | str]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def prompt_rows(n: int) -> list[dict[str, Any]]:
    return [{"id": f"p{i}", "prompt": f"Question number {i}?"} for i in range(n)]


def sim_config(
    tmp_path: Path,
    base_url: str,
    *,
    prompts: Path | None = None,
    n_prompts: int = 5,
    models: Iterable[str] = ("m1",),
    engine: Mapping[str, Any] | None = None,
    model_settings: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> RunConfig:
    """A config sending `n_prompts` prompts to models served by a test's SimServer."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if prompts is None:
        prompts = write_jsonl(tmp_path / "prompts.jsonl", prompt_rows(n_prompts))
    data = {
        "run": {"name": "t", "input": str(prompts), "output": str(tmp_path / "out"), **(run or {})},
        "engine": {"concurrency": 8, "timeout_s": 10, "backoff_base_s": 0.01, **(engine or {})},
        "models": [
            {
                "name": m,
                "provider": "openai",
                "model": m,
                "base_url": base_url,
                **(model_settings or {}),
            }
            for m in models
        ],
    }
    return config_from_dict(data, source=str(tmp_path / "config.toml"))
