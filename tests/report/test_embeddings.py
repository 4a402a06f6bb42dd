"""The report of a run with an embedding model: its own table, and no vectors held in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabatch import SimProfile, SimServer, arun, config_from_dict
from llamabatch.report.resultset import load_results
from llamabatch.report.summary import format_table, summarize
from llamabatch.report.tables import build_report, render_markdown
from tests.helpers import prompt_rows, write_jsonl

pytestmark = pytest.mark.anyio


async def test_embedding_models_get_their_own_table(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", prompt_rows(20))
    profile = SimProfile(ttft_s=0.01, tokens_per_s=0.0, output_tokens=4, embedding_dims=16)
    async with SimServer(default=profile) as sim:
        model = {"provider": "openai", "model": "m", "base_url": sim.base_url}
        config = config_from_dict(
            {
                "run": {"input": str(prompts), "output": str(tmp_path / "out")},
                "models": [
                    {"name": "chat", **model},
                    {"name": "embed", **model, "task": "embed", "batch_inputs": 5},
                ],
            }
        )
        await arun(config)
    results = load_results([tmp_path / "out"])
    assert "embedding" not in results.frame.columns and "dimensions" in results.frame.columns
    report = build_report(results)
    assert report.embeddings is not None
    (row,) = report.embeddings.to_dict("records")
    assert (row["model"], row["rows"], row["ok"], row["errors"]) == ("embed", 20, 20, "-")
    assert row["inputs_per_s"] > 0 and row["tokens_per_s"] > 0 and row["dimensions"] == "16"
    assert row["latency_p50_s"] >= 0.01
    markdown = render_markdown(report)
    assert "## Embeddings" in markdown and "| embed | 20 | 20 | - |" in markdown
    # The end-of-run summary has no output tokens per second to show for it.
    summary = format_table(summarize(results.frame))
    assert [line.split()[-1] for line in summary.splitlines() if line.startswith("embed")] == ["-"]
