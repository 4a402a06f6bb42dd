"""Helpers for scoring, report and compare tests: real runs on the simulator's answer table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llamabatch import SimProfile, SimServer, arun, config_from_dict
from tests.helpers import write_jsonl

SCORERS: list[dict[str, Any]] = [{"name": "exact", "type": "exact"}]


def eval_prompts(path: Path, n: int = 30) -> Path:
    rows = [
        {"id": f"q{i:02d}", "prompt": f"What is {i} + 1?", "expected": str(i + 1)} for i in range(n)
    ]
    return write_jsonl(path, rows)


async def eval_run(
    out: Path,
    prompts: Path,
    accuracy: Mapping[str, float],
    *,
    ttft_s: Mapping[str, float] | None = None,
    error_rate: Mapping[str, float] | None = None,
    repeats: int = 1,
    scorers: Sequence[Mapping[str, Any]] = SCORERS,
    temperature: float = 0.0,
    seed: int = 0,
    name: str = "eval",
    prices: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Run every prompt against simulated models with the given accuracies; return `out`."""
    profiles = {
        model: SimProfile(
            ttft_s=(ttft_s or {}).get(model, 0.0),
            tokens_per_s=0.0,
            jitter=0.0,
            answers=str(prompts),
            accuracy=acc,
            error_rate=(error_rate or {}).get(model, 0.0),
        )
        for model, acc in accuracy.items()
    }
    async with SimServer(profiles=profiles, seed=seed) as sim:
        config = config_from_dict(
            {
                "run": {
                    "name": name,
                    "input": str(prompts),
                    "output": str(out),
                    "repeats": repeats,
                },
                "engine": {"timeout_s": 10, "max_retries": 0},
                "defaults": {"temperature": temperature},
                "models": [
                    {
                        "name": m,
                        "provider": "openai",
                        "model": m,
                        "base_url": sim.base_url,
                        **({"usd_per_mtok": prices[m]} if prices and m in prices else {}),
                    }
                    for m in accuracy
                ],
                "scorers": list(scorers),
            }
        )
        await arun(config)
    return out
